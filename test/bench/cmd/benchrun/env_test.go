package main

import (
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestControllerEnvMatchesDeploy keeps the benchmark's controller environment in step with the
// Deployment's, so that "the controller as deployed" in docs/performance.md stays true.
func TestControllerEnvMatchesDeploy(t *testing.T) {
	raw, err := os.ReadFile("../../../../deploy/kubernetes/controller.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var dep struct {
		Spec struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Name string
						Env  []struct{ Name, Value string }
					}
				}
			}
		}
	}
	if err := yaml.Unmarshal(raw, &dep); err != nil {
		t.Fatal(err)
	}
	deployed := map[string]string{}
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Name != "paddock" {
			continue
		}
		for _, e := range c.Env {
			if e.Value != "" {
				deployed[e.Name] = e.Value
			}
		}
	}
	found := false
	for _, c := range dep.Spec.Template.Spec.Containers {
		found = found || c.Name == "paddock"
	}
	if !found {
		t.Fatal("no paddock container in deploy/kubernetes/controller.yaml")
	}
	bench := map[string]string{}
	for _, kv := range controllerEnv {
		k, v, _ := strings.Cut(kv, "=")
		bench[k] = v
	}
	for k, v := range deployed {
		if bench[k] != v {
			t.Errorf("deploy sets %s=%s, the benchmark %q", k, v, bench[k])
		}
	}
	for k := range bench {
		if _, ok := deployed[k]; !ok {
			t.Errorf("the benchmark sets %s, the Deployment does not", k)
		}
	}
}
