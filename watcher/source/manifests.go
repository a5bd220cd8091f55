package source

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kubeftp/kubeftp-edge/watcher/desired"
)

// LoadManifests reads Nodes, Services and EndpointSlices from a YAML or JSON file, or from
// every *.yaml, *.yml and *.json file of a folder (not recursive), for `render
// --from-manifests`. Files may hold several documents. Any other kind is an error naming the
// file: a typo must not silently drop an object from the computed edge.
func LoadManifests(path string) (desired.Input, error) {
	files, err := manifestFiles(path)
	if err != nil {
		return desired.Input{}, err
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return desired.Input{}, fmt.Errorf("building scheme: %w", err)
	}
	if err := discoveryv1.AddToScheme(scheme); err != nil {
		return desired.Input{}, fmt.Errorf("building scheme: %w", err)
	}
	decoder := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()

	var (
		nodes  []*corev1.Node
		svcs   []*corev1.Service
		slices []*discoveryv1.EndpointSlice
	)
	for _, file := range files {
		docs, err := readDocuments(file)
		if err != nil {
			return desired.Input{}, err
		}
		for i, doc := range docs {
			obj, gvk, err := decoder.Decode(doc, nil, nil)
			if err != nil {
				return desired.Input{}, fmt.Errorf("%s: document %d: %w", file, i+1, err)
			}
			switch o := obj.(type) {
			case *corev1.Node:
				nodes = append(nodes, o)
			case *corev1.Service:
				if o.Namespace == "" {
					o.Namespace = "default"
				}
				svcs = append(svcs, o)
			case *discoveryv1.EndpointSlice:
				if o.Namespace == "" {
					o.Namespace = "default"
				}
				slices = append(slices, o)
			default:
				return desired.Input{}, fmt.Errorf("%s: document %d: kind %s is not a Node, Service or discovery.k8s.io/v1 EndpointSlice", file, i+1, gvk.Kind)
			}
		}
	}
	return Filter(nodes, svcs, slices), nil
}

func manifestFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("--from-manifests: %w", err)
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("--from-manifests: %w", err)
	}
	var files []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("--from-manifests: no .yaml, .yml or .json file in %s", path)
	}
	sort.Strings(files)
	return files, nil
}

// readDocuments splits a multi-document YAML (or a JSON) file, dropping empty documents.
func readDocuments(file string) ([][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) > 0 {
			docs = append(docs, doc)
		}
	}
}

func stripComments(doc []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
