//go:build e2e

package kubelet

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/paddock-csi/paddock/test/e2e/kubeenv"
)

// TestPluginRegisteredWithKubelet: the node plugin pod registered itself (no registrar sidecar) and
// kubelet published the driver in CSINode and in the Node's annotation, with the node's ID.
func TestPluginRegisteredWithKubelet(t *testing.T) {
	ctx := kubeenv.Context(t, 2*time.Minute)
	ds, err := env.Cluster.Client.AppsV1().DaemonSets(kubeenv.Namespace).Get(ctx, "paddock-node", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range ds.Spec.Template.Spec.Containers {
		names = append(names, c.Name+"="+c.Image)
	}
	if len(names) != 1 || !strings.HasSuffix(names[0], "registry.paddock.test/paddock:e2e") {
		t.Errorf("node DaemonSet containers %v, want only paddock with the test image", names)
	}
	csiNode, err := env.Cluster.Client.StorageV1().CSINodes().Get(ctx, kubeenv.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("CSINode %s: %v", kubeenv.NodeName, err)
	}
	found := false
	for _, d := range csiNode.Spec.Drivers {
		if d.Name == kubeenv.Driver {
			found = true
			if d.NodeID != kubeenv.NodeName {
				t.Errorf("CSINode lists %s with node ID %q, want %q", d.Name, d.NodeID, kubeenv.NodeName)
			}
		}
	}
	if !found {
		t.Errorf("CSINode %s does not list %s: %+v", kubeenv.NodeName, kubeenv.Driver, csiNode.Spec.Drivers)
	}
	node, err := env.Cluster.Client.CoreV1().Nodes().Get(ctx, kubeenv.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	if err := json.Unmarshal([]byte(node.Annotations["csi.volume.kubernetes.io/nodeid"]), &ids); err != nil || ids[kubeenv.Driver] != kubeenv.NodeName {
		t.Errorf("node annotation csi.volume.kubernetes.io/nodeid = %q (%v), want %s -> %s",
			node.Annotations["csi.volume.kubernetes.io/nodeid"], err, kubeenv.Driver, kubeenv.NodeName)
	}
	// The socket kubelet watches, in kubelet's own plugins_registry, and the plugin's verdict on it.
	env.ShT(t, "test -S "+kubeenv.KubeletDir+"/plugins_registry/"+kubeenv.Driver+"-reg.sock")
	if out := env.ShT(t, "wget -q -O - http://127.0.0.1:9810/healthz"); !strings.Contains(out, "ok") {
		t.Errorf("node /healthz: %q", out)
	}
}
