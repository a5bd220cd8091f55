// Package golden holds the tests of the haproxy-ftp role's output: vars files from testdata
// are rendered through the real role (ansible-playbook ansible/render.yml), compared with
// golden files and checked with the real haproxy -c; bad vars must be refused by the role's
// preflight with a message naming the field, and values marked unsafe must never be
// evaluated as templates.
//
// Regenerate the golden files with `go test ./test/golden/ -update` and review the diff.
package golden
