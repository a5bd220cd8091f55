// Package kubeftpedge holds the files that the watcher binary carries with it.
package kubeftpedge

import "embed"

// Assets is the playbook tree, ansible/ and roles/, embedded into the watcher so that the binary
// runs exactly the playbook it was built with. The embed lives at the module root because
// go:embed cannot reach "..": a package under watcher/ could not embed these directories.
//
//go:embed ansible roles
var Assets embed.FS
