package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kubeftp/kubeftp-edge/watcher/apply"
)

func TestWithInventoryPortsReservesEachSSHPort(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yml")
	inv := `all:
  vars: {ansible_port: 2222}
  hosts:
    edge-a: {}
    edge-b: {ansible_port: 22}
    edge-c: {ansible_port: 10000}
`
	if err := os.WriteFile(path, []byte(inv), 0o600); err != nil {
		t.Fatal(err)
	}
	parsed, err := apply.LoadInventory(path)
	if err != nil {
		t.Fatal(err)
	}
	given := []int{10000, 8404}
	got := withInventoryPorts(given, parsed)
	slices.Sort(got)
	if want := []int{22, 2222, 8404, 10000}; !slices.Equal(got, want) {
		t.Fatalf("reserved = %v, want %v", got, want)
	}
	if !slices.Equal(given, []int{10000, 8404}) {
		t.Fatalf("the flag's list was modified: %v", given)
	}
}
