package load

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
)

// splitEscaped splits s on commas, except a comma written as `\,`, so a value
// can carry a comma (a parameter holding "nfsvers=4.1,hard" is common for
// NFS). `\\` is a literal backslash. Empty elements are dropped.
func splitEscaped(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 >= len(s) || (s[i+1] != ',' && s[i+1] != '\\') {
				return nil, fmt.Errorf("%q: backslash must be followed by ',' or '\\'", s)
			}
			i++
			cur.WriteByte(s[i])
		case c == ',':
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out, nil
}

// ParseList parses "a,b,c" (mount flags) into its elements; see splitEscaped.
func ParseList(s string) ([]string, error) {
	return splitEscaped(s)
}

// ParseKV parses "k=v,k=v" into a map. The value is everything after the
// first '=', so "k=a=b" is k -> "a=b"; an empty value ("k=") is allowed
// because CSI parameters may be empty, an empty key or a repeated key is not.
func ParseKV(s string) (map[string]string, error) {
	m := map[string]string{}
	if err := addKV(m, s); err != nil {
		return nil, err
	}
	return m, nil
}

func addKV(m map[string]string, s string) error {
	elems, err := splitEscaped(s)
	if err != nil {
		return err
	}
	for _, e := range elems {
		k, v, ok := strings.Cut(e, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return fmt.Errorf("%q: want key=value", e)
		}
		if _, dup := m[k]; dup {
			return fmt.Errorf("key %q given twice", k)
		}
		m[k] = v
	}
	return nil
}

// KVFlag is a flag.Value for "k=v,k=v"; the flag may be repeated and the
// pairs accumulate.
type KVFlag struct{ M map[string]string }

func (f *KVFlag) String() string {
	if f == nil || len(f.M) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f.M))
	for k := range f.M {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + strings.ReplaceAll(strings.ReplaceAll(f.M[k], `\`, `\\`), ",", `\,`))
	}
	return b.String()
}

// Set implements flag.Value.
func (f *KVFlag) Set(s string) error {
	if f.M == nil {
		f.M = map[string]string{}
	}
	return addKV(f.M, s)
}

// ListFlag is a flag.Value for "a,b"; the flag may be repeated.
type ListFlag struct{ L []string }

func (f *ListFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.L, ",")
}

// Set implements flag.Value.
func (f *ListFlag) Set(s string) error {
	l, err := ParseList(s)
	if err != nil {
		return err
	}
	f.L = append(f.L, l...)
	return nil
}

// k8sAccessModes maps the Kubernetes short names to the CSI mode kubelet and
// csi-provisioner send for them, as a convenience for people who think in
// PVC terms.
var k8sAccessModes = map[string]csi.VolumeCapability_AccessMode_Mode{
	"RWO":  csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
	"ROX":  csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
	"RWX":  csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER,
	"RWOP": csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
}

// ParseAccessMode parses a CSI access mode enum name (case-insensitive, e.g.
// MULTI_NODE_MULTI_WRITER) or a Kubernetes short name (RWO, ROX, RWX, RWOP).
// UNKNOWN is refused: it is never a valid request.
func ParseAccessMode(s string) (csi.VolumeCapability_AccessMode_Mode, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if m, ok := k8sAccessModes[u]; ok {
		return m, nil
	}
	if v, ok := csi.VolumeCapability_AccessMode_Mode_value[u]; ok && v != 0 {
		return csi.VolumeCapability_AccessMode_Mode(v), nil
	}
	names := make([]string, 0, len(csi.VolumeCapability_AccessMode_Mode_value))
	for n, v := range csi.VolumeCapability_AccessMode_Mode_value {
		if v != 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return 0, fmt.Errorf("access mode %q: want one of %s (or RWO, ROX, RWX, RWOP)", s, strings.Join(names, ", "))
}

// ParseSize parses a byte count: a plain integer or one with a binary (Ki,
// Mi, Gi, Ti) or decimal (K, M, G, T) suffix, as Kubernetes quantities are
// written. "" is 0 (no capacity requested).
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	orig := s
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"K", 1e3}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a non-negative integer with an optional Ki/Mi/Gi/Ti or K/M/G/T suffix", orig)
	}
	if n > 0 && mult > 1 && n > (1<<63-1)/mult {
		return 0, fmt.Errorf("size %q overflows int64", orig)
	}
	return n * mult, nil
}
