package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Namespace creates a namespace for one test and deletes it when the test ends. Namespaces
// are cheap in a real API server and keep tests of one package from seeing each other.
func Namespace(t testing.TB, cs kubernetes.Interface) string {
	t.Helper()
	base := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(base) > 40 {
		base = base[:40]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(base, "-") + "-"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cs.CoreV1().Namespaces().Delete(ctx, got.Name, metav1.DeleteOptions{}); err != nil {
			t.Logf("deleting namespace %s: %v", got.Name, err)
		}
	})
	return got.Name
}

// MustStart starts a cluster for a test binary; call it from TestMain and Stop it after m.Run.
func MustStart(dir string) (*Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("starting the test control plane: %w", err)
	}
	return c, nil
}
