// Package docs checks that what the README promises exists in the code, and back.
package docs

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kubeftp/kubeftp-edge/watcher/config"
	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// codeFlags lists the flags of a subcommand from its own usage text.
func codeFlags(t *testing.T, cmd config.Command) []string {
	t.Helper()
	var usage bytes.Buffer
	if _, err := config.Parse(cmd, []string{"-h"}, func(string) string { return "" }, &usage); err == nil {
		t.Fatalf("%s -h: want the help error", cmd)
	}
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`).FindAllStringSubmatch(usage.String(), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) < 5 {
		t.Fatalf("%s: found only %v in the usage text:\n%s", cmd, flags, usage.String())
	}
	return flags
}

func set(lists ...[]string) []string {
	m := map[string]bool{}
	for _, l := range lists {
		for _, s := range l {
			m[s] = true
		}
	}
	out := make([]string, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func TestReadmeFlagsMatchCode(t *testing.T) {
	// The flags table: rows that start with a flag in backquotes.
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `--([a-z][a-z0-9-]*)`").FindAllStringSubmatch(readme(t), -1) {
		documented = append(documented, m[1])
	}
	want := set(codeFlags(t, config.CommandWatch), codeFlags(t, config.CommandRender))
	if diff := cmp.Diff(want, set(documented)); diff != "" {
		t.Errorf("README flags table vs the code's flags (-code +README):\n%s", diff)
	}
}

func TestReadmeAnnotationsMatchCode(t *testing.T) {
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(kubeftp\\.io/[a-z-]+)`").FindAllStringSubmatch(readme(t), -1) {
		documented = append(documented, m[1])
	}
	if diff := cmp.Diff(set(desired.Annotations()), set(documented)); diff != "" {
		t.Errorf("README annotations table vs the code (-code +README):\n%s", diff)
	}
	// Every kubeftp.io/ key the README mentions anywhere is an annotation or the opt-in label.
	known := map[string]bool{desired.LabelExpose: true}
	for _, a := range desired.Annotations() {
		known[a] = true
	}
	for _, m := range regexp.MustCompile(`kubeftp\.io/[a-z-]+`).FindAllString(readme(t), -1) {
		if !known[m] {
			t.Errorf("README mentions %s, which the code does not know", m)
		}
	}
}
