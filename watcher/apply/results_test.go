package apply

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadResults(t *testing.T) {
	tests := []struct {
		name    string
		content string // "" means no file
		limit   []string
		want    map[string]HostResult
		wantErr string
	}{
		{
			name: "per host",
			content: `{"hosts": {
				"e1": {"ok": 9, "changed": 2, "failures": 0, "unreachable": 0, "skipped": 1, "rescued": 0, "config_changed": true, "reloaded": true, "rolled_back": false, "msg": ""},
				"e2": {"ok": 7, "changed": 3, "failures": 0, "unreachable": 0, "skipped": 0, "rescued": 1, "config_changed": true, "reloaded": true, "rolled_back": true, "msg": "new worker did not start"},
				"e3": {"ok": 0, "changed": 0, "failures": 0, "unreachable": 1, "skipped": 0, "rescued": 0, "config_changed": false, "reloaded": false, "rolled_back": false, "msg": "Host key verification failed."},
				"e4": {"ok": 3, "changed": 0, "failures": 1, "unreachable": 0, "skipped": 0, "rescued": 0, "config_changed": false, "reloaded": false, "rolled_back": false, "msg": "haproxy -c failed"}}}`,
			want: map[string]HostResult{
				"e1": {Host: "e1", OK: true, Changed: true, Reloaded: true},
				// A rollback is rescued inside the role, yet the host did not get the new config.
				"e2": {Host: "e2", Changed: true, Reloaded: true, RolledBack: true, Message: "new worker did not start"},
				"e3": {Host: "e3", Unreachable: true, Message: "Host key verification failed."},
				"e4": {Host: "e4", Message: "haproxy -c failed"},
			},
		},
		{
			name:    "limit host without result",
			content: `{"hosts": {"e1": {"ok": 1}}}`,
			limit:   []string{"e1", "e9"},
			want: map[string]HostResult{
				"e1": {Host: "e1", OK: true},
				"e9": {Host: "e9", Message: "no result: the play did not run on this host"},
			},
		},
		{name: "no file", wantErr: "nothing ran"},
		{name: "no hosts", content: `{"hosts": {}}`, wantErr: "nothing ran"},
		{name: "not JSON", content: `{"hosts": `, wantErr: "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "result.json")
			if tt.content != "" {
				writeFile(t, filepath.Dir(path), "result.json", tt.content, 0o600)
			}
			got, err := readResults(path, tt.limit)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readResults() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Hosts); diff != "" {
				t.Errorf("readResults() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, s := range []string{"abc", "defgh", "ijklmn"} {
		if _, err := b.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if diff := cmp.Diff("[6 bytes dropped]\ngh"+"ijklmn", b.String()); diff != "" {
		t.Errorf("String() (-want +got):\n%s", diff)
	}
}
