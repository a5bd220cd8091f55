package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Keys of the state ConfigMap. vars.json is exactly what the watcher last applied (to at least
// one host), in the form `ansible-playbook -e @vars.json` reads; hosts.json says which host has
// which hash. No secret ever goes in: the vars hold only validated cluster values.
const (
	KeyVars       = "vars.json"
	KeyHosts      = "hosts.json"
	KeyGeneration = "generation"
)

// stateStore reads and writes the state ConfigMap.
type stateStore struct {
	client    kubernetes.Interface
	namespace string
	name      string
	// last is what was last read or written, to skip writes that change nothing.
	last map[string]string
}

// load returns the stored per-host states and the stored data; a missing ConfigMap is not an
// error (first start).
func (s *stateStore) load(ctx context.Context) (map[string]*HostState, map[string]string, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return map[string]*HostState{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading state configmap %s/%s: %w", s.namespace, s.name, err)
	}
	s.last = maps.Clone(cm.Data)
	hosts := map[string]*HostState{}
	if raw := cm.Data[KeyHosts]; raw != "" {
		if err := json.Unmarshal([]byte(raw), &hosts); err != nil {
			return nil, nil, fmt.Errorf("state configmap %s/%s: %s: %w", s.namespace, s.name, KeyHosts, err)
		}
	}
	for _, st := range hosts {
		// a host stored as failed is retried at once after a restart
		st.attempted = st.Hash
	}
	return hosts, cm.Data, nil
}

// save writes the ConfigMap when its data differ from the last known content.
func (s *stateStore) save(ctx context.Context, vars []byte, generation string, hosts map[string]*HostState) error {
	hostsJSON, err := marshalHosts(hosts)
	if err != nil {
		return err
	}
	data := map[string]string{KeyHosts: string(hostsJSON)}
	if vars != nil {
		data[KeyVars] = string(vars)
		data[KeyGeneration] = generation
	} else if s.last != nil {
		// nothing applied yet in this run: keep what an earlier run applied
		for _, k := range []string{KeyVars, KeyGeneration} {
			if v, ok := s.last[k]; ok {
				data[k] = v
			}
		}
	}
	if maps.Equal(data, s.last) {
		return nil
	}
	cms := s.client.CoreV1().ConfigMaps(s.namespace)
	cm, err := cms.Get(ctx, s.name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: s.name, Namespace: s.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "kubeftp-edge"},
			},
			Data: data,
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating state configmap %s/%s: %w", s.namespace, s.name, err)
		}
	case err != nil:
		return fmt.Errorf("reading state configmap %s/%s: %w", s.namespace, s.name, err)
	default:
		cm.Data = data
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating state configmap %s/%s: %w", s.namespace, s.name, err)
		}
	}
	s.last = data
	return nil
}

func marshalHosts(hosts map[string]*HostState) ([]byte, error) {
	b, err := json.Marshal(hosts) // map keys are sorted: stable bytes for equal states
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", KeyHosts, err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, fmt.Errorf("encoding %s: %w", KeyHosts, err)
	}
	return out.Bytes(), nil
}
