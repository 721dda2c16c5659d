package volume

import (
	"strings"
	"testing"
)

func fullVars() TemplateVars {
	return TemplateVars{
		PVCName:      "data-db-0",
		PVCNamespace: "team-a",
		PVName:       testUUIDName,
		Labels:       map[string]string{"team": "storage", "app.kubernetes.io/name": "postgres", "empty": ""},
		Annotations:  map[string]string{"example.com/owner": "alice", "backup": "nightly"},
	}
}

func TestTemplateExpand(t *testing.T) {
	tests := []struct {
		tmpl string
		want string
	}{
		{DefaultSubDir, testUUIDName},
		{"${pv.metadata.name}", testUUIDName},
		{"${pvc.metadata.name}", "data-db-0"},
		{"${pvc.metadata.namespace}", "team-a"},
		{"${pvc.metadata.namespace}/${pvc.metadata.name}", "team-a/data-db-0"},
		{"${pvc.metadata.namespace}/${pvc.metadata.name}/${pv.metadata.name}", "team-a/data-db-0/" + testUUIDName},
		{"${pvc.metadata.namespace}-${pvc.metadata.name}", "team-a-data-db-0"},
		{"${pvc.metadata.labels['team']}", "storage"},
		{`${pvc.metadata.labels["team"]}`, "storage"},
		{"${pvc.metadata.labels['app.kubernetes.io/name']}", "postgres"},
		{"${pvc.metadata.annotations['example.com/owner']}", "alice"},
		{`${pvc.metadata.annotations["example.com/owner"]}`, "alice"},
		{"${pvc.metadata.annotations['backup']}/${pvc.metadata.labels['team']}/${pvc.metadata.name}", "nightly/storage/data-db-0"},
		{"k8s/${pvc.metadata.namespace}/vol-${pv.metadata.name}", "k8s/team-a/vol-" + testUUIDName},
		{"static-dir", "static-dir"},
		{"a/b/c", "a/b/c"},
		{"x${pvc.metadata.labels['empty']}y", "xy"},
		{"${pvc.metadata.name}${pvc.metadata.name}", "data-db-0data-db-0"},
		{"$pvc/${pvc.metadata.name}", "$pvc/data-db-0"},
		{"{}/${pvc.metadata.name}}", "{}/data-db-0}"},
		{"${pvc.metadata.name}.d", "data-db-0.d"},
		{"..${pvc.metadata.name}", "..data-db-0"},
		{"a/.paddock-x/${pvc.metadata.name}", "a/.paddock-x/data-db-0"},
	}
	for _, tc := range tests {
		t.Run(tc.tmpl, func(t *testing.T) {
			tm, err := ParseTemplate(tc.tmpl)
			if err != nil {
				t.Fatalf("ParseTemplate(%q) = %v", tc.tmpl, err)
			}
			if tm.String() != tc.tmpl {
				t.Errorf("String() = %q, want %q", tm.String(), tc.tmpl)
			}
			got, err := tm.Expand(fullVars())
			if err != nil {
				t.Fatalf("Expand = %v", err)
			}
			if got != tc.want {
				t.Errorf("Expand = %q, want %q", got, tc.want)
			}
			if err := ValidateSubDir(got); err != nil {
				t.Errorf("expansion %q does not validate: %v", got, err)
			}
		})
	}
}

func TestTemplateParseErrors(t *testing.T) {
	tests := []struct {
		tmpl    string
		mention string // a substring the error must contain
	}{
		{"", "empty"},
		{"${pvc.metadata.uid}", "unknown variable"},
		{"${pvc.name}", "unknown variable"},
		{"${PVC.METADATA.NAME}", "unknown variable"},
		{"${ pvc.metadata.name }", "unknown variable"},
		{"${}", "unknown variable"},
		{"${pvc.metadata.labels}", "unknown variable"},
		{"${env.HOME}", "unknown variable"},
		{"${pvc.metadata.name", "unterminated"},
		{"a/${", "unterminated"},
		{"${pvc.metadata.name}/${pvc.metadata.namespace", "unterminated"},
		{"${pvc.metadata.labels[team]}", "quoted"},
		{"${pvc.metadata.labels['team\"]}", "quoted"},
		{"${pvc.metadata.labels['team]}", "quoted"},
		{"${pvc.metadata.labels['']}", "quoted"},
		{`${pvc.metadata.labels[""]}`, "quoted"},
		{"${pvc.metadata.labels[\"a'b\"]}", "bad key"},
		{"${pvc.metadata.annotations[team]}", "quoted"},
		{"${pvc.metadata.annotations['a'b']}", "bad key"},
		{"${pvc.metadata.labels['team'}", "unknown variable"},
		{".paddock", "metadata"},
		{".paddock/x", "metadata"},
		{".paddock/${pvc.metadata.name}", "metadata"},
		{".paddock/trash/${pv.metadata.name}", "metadata"},
		{"..", "not allowed"},
		{".", "not"},
		{"../x", "not"},
		{"../${pvc.metadata.name}", "not"},
		{"${pvc.metadata.name}/..", "not"},
		{"a/../b", "canonical"},
		{"/x", "absolute"},
		{"/${pvc.metadata.name}", "absolute"},
		{"a//b", "canonical"},
		{"${pvc.metadata.namespace}//${pvc.metadata.name}", "canonical"},
		{"a/", "canonical"},
		{"${pvc.metadata.name}/", "canonical"},
		{"./${pvc.metadata.name}", "canonical"},
		{"a\x00${pvc.metadata.name}", "NUL"},
		{"a\n${pvc.metadata.name}", "control"},
		{strings.Repeat("c", 256), "longer"},
		{strings.Repeat("c", 255) + "${pvc.metadata.name}", "longer"},
		{strings.TrimSuffix(strings.Repeat("${pvc.metadata.name}/", 17), "/"), "levels"},
		{strings.Repeat("a", MaxTemplateLen+1), "longer"},
	}
	for _, tc := range tests {
		t.Run(tc.tmpl, func(t *testing.T) {
			_, err := ParseTemplate(tc.tmpl)
			if err == nil {
				t.Fatalf("ParseTemplate(%q) = nil, want an error", tc.tmpl)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("ParseTemplate(%q) = %q, want it to mention %q", tc.tmpl, err, tc.mention)
			}
		})
	}
}

func TestTemplateUnknownVariableListsKnown(t *testing.T) {
	_, err := ParseTemplate("${pvc.metadata.uid}")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, k := range []string{"${pvc.metadata.name}", "${pvc.metadata.namespace}", "${pv.metadata.name}",
		"${pvc.metadata.labels['KEY']}", "${pvc.metadata.annotations['KEY']}", "${pvc.metadata.uid}"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not mention %s", err, k)
		}
	}
}

// TestTemplateHostileValues feeds every variable every hostile value: each must be refused, with an
// error naming the variable, and never produce a path.
func TestTemplateHostileValues(t *testing.T) {
	hostile := map[string]string{
		"dot dot":     "..",
		"dot":         ".",
		"slash":       "a/b",
		"traversal":   "../../etc",
		"absolute":    "/abs",
		"slash only":  "/",
		"trailing /":  "a/",
		"NUL":         "a\x00b",
		"newline":     "a\nb",
		"tab":         "a\tb",
		"escape":      "\x1b[2J",
		"DEL":         "a\x7f",
		"256 bytes":   strings.Repeat("v", 256),
		"long + /":    strings.Repeat("v", 300) + "/x",
		"meta path":   ".paddock/trash",
		"backslashes": "..\\../etc/passwd",
	}
	vars := []struct {
		tmpl    string
		mention string
		set     func(*TemplateVars, string)
	}{
		{"${pvc.metadata.name}", "${pvc.metadata.name}", func(v *TemplateVars, s string) { v.PVCName = s }},
		{"${pvc.metadata.namespace}", "${pvc.metadata.namespace}", func(v *TemplateVars, s string) { v.PVCNamespace = s }},
		{"${pv.metadata.name}", "${pv.metadata.name}", func(v *TemplateVars, s string) { v.PVName = s }},
		{"${pvc.metadata.labels['team']}", `label "team"`, func(v *TemplateVars, s string) { v.Labels["team"] = s }},
		{"${pvc.metadata.annotations['example.com/owner']}", `annotation "example.com/owner"`,
			func(v *TemplateVars, s string) { v.Annotations["example.com/owner"] = s }},
	}
	for _, tv := range vars {
		for _, layout := range []string{"%s", "ns/%s", "%s/x", "pre-%s-post"} {
			tmpl := strings.Replace(layout, "%s", tv.tmpl, 1)
			tm, err := ParseTemplate(tmpl)
			if err != nil {
				t.Fatalf("ParseTemplate(%q) = %v", tmpl, err)
			}
			for hname, h := range hostile {
				t.Run(tmpl+"/"+hname, func(t *testing.T) {
					vars := fullVars()
					tv.set(&vars, h)
					out, err := tm.Expand(vars)
					if err == nil {
						// Only the combinations that form a safe single component may pass.
						if strings.ContainsAny(h, "/\x00\n\t\x1b\x7f") || len(h) > MaxComponent || h == "." || h == ".." {
							t.Fatalf("Expand with %q = %q, want an error", h, out)
						}
						if err := ValidateSubDir(out); err != nil {
							t.Fatalf("Expand with %q = %q, which does not validate: %v", h, out, err)
						}
						return
					}
					if out != "" {
						t.Errorf("Expand returned %q with its error", out)
					}
					if !strings.Contains(err.Error(), tv.mention) {
						t.Errorf("Expand with %q: error %q does not name %s", h, err, tv.mention)
					}
				})
			}
		}
	}
}

func TestTemplateValueBecomesMeta(t *testing.T) {
	// A value that is harmless alone but joins a literal into the metadata area or "." / ".." is refused.
	tests := []struct {
		tmpl string
		vars TemplateVars
	}{
		{"${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": ".paddock"}}},
		{"${pvc.metadata.labels['a']}/x", TemplateVars{Labels: map[string]string{"a": ".paddock"}}},
		{".${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": "paddock"}}},
		{".${pvc.metadata.labels['a']}/trash", TemplateVars{Labels: map[string]string{"a": "PADDOCK"}}},
		{".${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": "."}}},
		{".${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": ""}}},
		{"${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": ""}}},
		{"x/${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": ""}}},
		{"${pvc.metadata.labels['a']}${pvc.metadata.labels['b']}", TemplateVars{Labels: map[string]string{"a": "", "b": ""}}},
		{"${pvc.metadata.labels['a']}.", TemplateVars{Labels: map[string]string{"a": ""}}},
		{"${pvc.metadata.labels['a']}${pvc.metadata.labels['a']}", TemplateVars{Labels: map[string]string{"a": strings.Repeat("x", 200)}}},
		{"${pvc.metadata.name}" + strings.Repeat("y", 100), TemplateVars{PVCName: strings.Repeat("x", 200)}},
	}
	for _, tc := range tests {
		tm, err := ParseTemplate(tc.tmpl)
		if err != nil {
			t.Fatalf("ParseTemplate(%q) = %v", tc.tmpl, err)
		}
		if out, err := tm.Expand(tc.vars); err == nil {
			t.Errorf("Expand(%q, %+v) = %q, want an error", tc.tmpl, tc.vars, out)
		}
	}
}

func TestTemplateMissingValues(t *testing.T) {
	tests := []struct {
		name    string
		tmpl    string
		vars    TemplateVars
		mention []string
	}{
		{"missing label", "${pvc.metadata.labels['tier']}", fullVars(), []string{`label "tier"`, "not set"}},
		{"missing annotation", "${pvc.metadata.annotations['tier']}", fullVars(), []string{`annotation "tier"`, "not set"}},
		{"labels without metadata", "${pvc.metadata.labels['team']}", TemplateVars{PVCName: "c", PVCNamespace: "n", PVName: "p"},
			[]string{`label "team"`, "embedded provisioner"}},
		{"annotations without metadata", "${pvc.metadata.annotations['team']}", TemplateVars{PVCName: "c", PVCNamespace: "n", PVName: "p"},
			[]string{`annotation "team"`, "embedded provisioner"}},
		{"pvc name without metadata", "${pvc.metadata.name}", TemplateVars{PVName: "p"},
			[]string{"${pvc.metadata.name}", "--extra-create-metadata"}},
		{"pvc namespace without metadata", "${pvc.metadata.namespace}/${pv.metadata.name}", TemplateVars{PVName: "p"},
			[]string{"${pvc.metadata.namespace}", "--extra-create-metadata"}},
		{"pv name missing", "${pv.metadata.name}", TemplateVars{}, []string{"${pv.metadata.name}"}},
		{"first error wins", "${pvc.metadata.labels['x']}/${pvc.metadata.labels['y']}", TemplateVars{Labels: map[string]string{}},
			[]string{`label "x"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := ParseTemplate(tc.tmpl)
			if err != nil {
				t.Fatalf("ParseTemplate(%q) = %v", tc.tmpl, err)
			}
			out, err := tm.Expand(tc.vars)
			if err == nil {
				t.Fatalf("Expand = %q, want an error", out)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

func TestTemplateKeyWithBraceOrSlash(t *testing.T) {
	// Annotation keys often hold '/'; that must not count as a path separator.
	tm, err := ParseTemplate("${pvc.metadata.annotations['a/b/c']}")
	if err != nil {
		t.Fatal(err)
	}
	out, err := tm.Expand(TemplateVars{Annotations: map[string]string{"a/b/c": "v"}})
	if err != nil || out != "v" {
		t.Errorf("Expand = %q, %v; want \"v\"", out, err)
	}
	if _, err := ParseTemplate("${pvc.metadata.labels['a}b']}"); err == nil {
		t.Errorf("a '}' in a key must not parse")
	}
}
