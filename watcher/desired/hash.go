package desired

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Hash is the hex sha256 of the State's canonical JSON (encoding/json of State: Services
// sorted by id, nodes by name) with Generation left empty, so that equal States hash equal no
// matter which Generation they carry. The document lists each node once, so it stays small
// (nodes + services) and plain encoding/json is fast enough.
func (s State) Hash() string {
	s.Generation = ""
	// State holds only strings, ints, pointers to ints and slices of those: Marshal cannot fail.
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
