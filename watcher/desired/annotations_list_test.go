package desired

import (
	"strings"
	"testing"
)

// Annotations() is what the docs are checked against: every key in it must be one the parser
// knows (no "unknown annotation" warning), and every key the parser knows must be in it.
func TestAnnotationsListMatchesParser(t *testing.T) {
	for _, k := range Annotations() {
		_, warns := parseAnnotations(map[string]string{k: "x"})
		for _, w := range warns {
			if w.Reason == ReasonUnknownAnnotation {
				t.Errorf("%s is listed by Annotations() but the parser calls it unknown", k)
			}
		}
	}
	listed := map[string]bool{}
	for _, k := range Annotations() {
		listed[k] = true
	}
	// A key that is not listed must be reported as unknown; probe with near misses of each.
	for _, k := range Annotations() {
		probe := strings.TrimSuffix(k, k[len(k)-1:]) + "_"
		if listed[probe] {
			continue
		}
		_, warns := parseAnnotations(map[string]string{probe: "x"})
		if len(warns) != 1 || warns[0].Reason != ReasonUnknownAnnotation {
			t.Errorf("%s: want one UnknownAnnotation warning, got %+v", probe, warns)
		}
	}
}
