package volume

import (
	"fmt"
	"strings"
)

// DefaultSubDir gives every volume its own directory named after its PV, unique by construction.
const DefaultSubDir = "${pv.metadata.name}"

// TemplateVars are the values a subDir template may use. Labels and Annotations are nil when the
// caller has no PVC object (a CSI CreateVolume from the external csi-provisioner sidecar).
type TemplateVars struct {
	PVCName      string
	PVCNamespace string
	PVName       string
	Labels       map[string]string
	Annotations  map[string]string
}

type segKind int

const (
	segLiteral segKind = iota
	segPVCName
	segPVCNamespace
	segPVName
	segLabel
	segAnnotation
)

type segment struct {
	kind segKind
	text string // the literal, or the label/annotation key
}

// Template is a parsed subDir template.
type Template struct {
	raw  string
	segs []segment
}

func (t Template) String() string { return t.raw }

// MaxTemplateLen bounds the template source: the expansion is bounded by the component rules anyway.
const MaxTemplateLen = 4096

// ParseTemplate parses a subDir template such as "${pvc.metadata.namespace}/${pvc.metadata.name}".
// It checks the literal text against the path rules by expanding every variable to a placeholder, so a
// template that could only ever produce a bad path is refused when the class is used, not later.
func ParseTemplate(s string) (Template, error) {
	if len(s) > MaxTemplateLen {
		return Template{}, fmt.Errorf("template is %d bytes, longer than %d", len(s), MaxTemplateLen)
	}
	t := Template{raw: s}
	rest := s
	for rest != "" {
		i := strings.Index(rest, "${")
		if i < 0 {
			t.segs = append(t.segs, segment{kind: segLiteral, text: rest})
			break
		}
		if i > 0 {
			t.segs = append(t.segs, segment{kind: segLiteral, text: rest[:i]})
		}
		end := strings.IndexByte(rest[i:], '}')
		if end < 0 {
			return Template{}, fmt.Errorf("template %q: unterminated \"${\"", s)
		}
		expr := rest[i+2 : i+end]
		seg, err := parseVar(expr)
		if err != nil {
			return Template{}, fmt.Errorf("template %q: %w", s, err)
		}
		t.segs = append(t.segs, seg)
		rest = rest[i+end+1:]
	}
	if len(t.segs) == 0 {
		return Template{}, fmt.Errorf("template is empty: a volume can never be the export root")
	}
	probe := t.expand(func(segment) string { return "x" })
	if err := ValidateSubDir(probe); err != nil {
		return Template{}, fmt.Errorf("template %q: %w", s, err)
	}
	return t, nil
}

func parseVar(expr string) (segment, error) {
	switch expr {
	case "pvc.metadata.name":
		return segment{kind: segPVCName}, nil
	case "pvc.metadata.namespace":
		return segment{kind: segPVCNamespace}, nil
	case "pv.metadata.name":
		return segment{kind: segPVName}, nil
	}
	for prefix, kind := range map[string]segKind{"pvc.metadata.labels[": segLabel, "pvc.metadata.annotations[": segAnnotation} {
		if !strings.HasPrefix(expr, prefix) || !strings.HasSuffix(expr, "]") {
			continue
		}
		q := expr[len(prefix) : len(expr)-1]
		if len(q) < 3 || (q[0] != '\'' && q[0] != '"') || q[len(q)-1] != q[0] {
			return segment{}, fmt.Errorf("variable ${%s}: the key must be quoted, like ['team']", expr)
		}
		key := q[1 : len(q)-1]
		if strings.ContainsAny(key, "'\"") || key == "" {
			return segment{}, fmt.Errorf("variable ${%s}: bad key %q", expr, key)
		}
		return segment{kind: kind, text: key}, nil
	}
	return segment{}, fmt.Errorf("unknown variable ${%s}; known: ${pvc.metadata.name}, ${pvc.metadata.namespace}, "+
		"${pv.metadata.name}, ${pvc.metadata.labels['KEY']}, ${pvc.metadata.annotations['KEY']}", expr)
}

func (t Template) expand(value func(segment) string) string {
	var b strings.Builder
	for _, s := range t.segs {
		if s.kind == segLiteral {
			b.WriteString(s.text)
		} else {
			b.WriteString(value(s))
		}
	}
	return b.String()
}

// Expand fills the template. A value can never add or remove path components: one containing '/',
// NUL or a control character is refused, as is a result that is not a valid volume directory.
func (t Template) Expand(vars TemplateVars) (string, error) {
	var firstErr error
	out := t.expand(func(s segment) string {
		v, err := lookup(s, vars)
		if err == nil {
			err = checkValue(v)
			if err != nil {
				err = fmt.Errorf("%s: %w", describe(s), err)
			}
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return v
	})
	if firstErr != nil {
		return "", fmt.Errorf("template %q: %w", t.raw, firstErr)
	}
	if err := ValidateSubDir(out); err != nil {
		return "", fmt.Errorf("template %q expands to a bad directory: %w", t.raw, err)
	}
	return out, nil
}

func lookup(s segment, vars TemplateVars) (string, error) {
	need := func(v string) (string, error) {
		if v == "" {
			return "", fmt.Errorf("%s is not known to this call (with the csi-provisioner sidecar, run it "+
				"with --extra-create-metadata)", describe(s))
		}
		return v, nil
	}
	switch s.kind {
	case segPVCName:
		return need(vars.PVCName)
	case segPVCNamespace:
		return need(vars.PVCNamespace)
	case segPVName:
		return need(vars.PVName)
	case segLabel, segAnnotation:
		m := vars.Labels
		if s.kind == segAnnotation {
			m = vars.Annotations
		}
		if m == nil {
			return "", fmt.Errorf("%s: PVC labels and annotations are only known to the embedded provisioner", describe(s))
		}
		v, ok := m[s.text]
		if !ok {
			return "", fmt.Errorf("%s is not set on the PVC", describe(s))
		}
		return v, nil
	}
	return "", fmt.Errorf("unknown template segment")
}

func describe(s segment) string {
	switch s.kind {
	case segPVCName:
		return "${pvc.metadata.name}"
	case segPVCNamespace:
		return "${pvc.metadata.namespace}"
	case segPVName:
		return "${pv.metadata.name}"
	case segLabel:
		return fmt.Sprintf("label %q", s.text)
	case segAnnotation:
		return fmt.Sprintf("annotation %q", s.text)
	}
	return "literal"
}

func checkValue(v string) error {
	if v == "." || v == ".." {
		return fmt.Errorf("value %q is not allowed", v)
	}
	if len(v) > MaxComponent {
		return fmt.Errorf("value is %d bytes, longer than %d", len(v), MaxComponent)
	}
	for _, r := range v {
		if r == '/' || r == 0 || r < 0x20 || r == 0x7f {
			return fmt.Errorf("value %q contains '/', NUL or a control character", v)
		}
	}
	return nil
}
