package apply

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestLoadInventory(t *testing.T) {
	path := filepath.Join("testdata", "inventory", "lab.yml")
	got, err := LoadInventory(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Inventory{Path: path, Hosts: []Host{
		{Name: "edge1", Address: "10.213.1.11", Port: 22, User: "root", Groups: []string{"all", "edge"}},
		// Host vars (port "2222") win over the group var of edge.
		{Name: "edge2", Address: "10.213.1.12", Port: 2222, User: "root", Groups: []string{"all", "dmz", "edge", "edge_west"}},
		// The more specific host var wins over all's ansible_user.
		{Name: "edge3", Address: "edge3.example.net", Port: 22, User: "deploy", Groups: []string{"all", "dmz", "edge_west"}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LoadInventory() (-want +got):\n%s", diff)
	}
	if h, ok := got.Host("edge3"); !ok || h.User != "deploy" {
		t.Errorf("Host(edge3) = %+v, %v", h, ok)
	}
}

func TestLoadInventoryErrors(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{file: "malformed.yml", want: "not a YAML inventory"},
		{file: "nohosts.yml", want: "no hosts"},
		{file: "empty.yml", want: "no hosts"},
		{file: "typo.yml", want: "field host not found"},
		{file: "badport.yml", want: `host "edge1": ansible_port must be a port number`},
		{file: "ini.yml", want: "not a YAML inventory"},
		{file: "missing.yml", want: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", "inventory", tt.file)
			_, err := LoadInventory(path)
			if err == nil {
				t.Fatalf("LoadInventory(%s) = nil error, want %q", path, tt.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file %s", err, path)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
