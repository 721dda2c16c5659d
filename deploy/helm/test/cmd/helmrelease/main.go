// Command helmrelease installs, upgrades and uninstalls a release of a chart with Helm's own library
// (helm.sh/helm/v3 action package, the code behind helm install/upgrade/uninstall), against the
// cluster of a kubeconfig. The cluster e2e tier runs it (test/e2e/cluster/helm_test.go): it lives in
// this module so that the driver's go.mod does not carry Helm's dependency tree.
//
//	helmrelease -kubeconfig F -namespace NS -release NAME [-chart DIR] [-f values.yaml]... install|upgrade|uninstall
//
// It prints the release as JSON on stdout: name, namespace, revision, status and the rendered manifest.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/release"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

type files []string

func (f *files) String() string     { return fmt.Sprint(*f) }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

// Result is what helmrelease prints.
type Result struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Revision  int    `json:"revision"`
	Status    string `json:"status"`
	Manifest  string `json:"manifest"`
	Info      string `json:"info,omitempty"`
}

func main() {
	var (
		kubeconfig = flag.String("kubeconfig", "", "kubeconfig of the cluster")
		namespace  = flag.String("namespace", "default", "the release's namespace")
		name       = flag.String("release", "", "release name")
		chartDir   = flag.String("chart", "", "chart directory (install, upgrade)")
		timeout    = flag.Duration("timeout", 2*time.Minute, "deadline of the operation")
		valueFiles files
	)
	flag.Var(&valueFiles, "f", "values file (repeatable, later ones win)")
	flag.Parse()
	if flag.NArg() != 1 || *name == "" || *kubeconfig == "" {
		log.Fatal("usage: helmrelease -kubeconfig F -namespace NS -release NAME [-chart DIR] [-f values.yaml]... install|upgrade|uninstall")
	}
	res, err := run(flag.Arg(0), *kubeconfig, *namespace, *name, *chartDir, valueFiles, *timeout)
	if err != nil {
		log.Fatalf("helmrelease %s: %v", flag.Arg(0), err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		log.Fatal(err)
	}
}

func run(op, kubeconfig, namespace, name, chartDir string, valueFiles []string, timeout time.Duration) (*Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kubeconfig, &namespace
	cfg := &action.Configuration{}
	// Releases are stored as Secrets in the release's namespace, as the helm command stores them.
	if err := cfg.Init(flags, namespace, "secret", log.Printf); err != nil {
		return nil, err
	}
	if op == "uninstall" {
		u := action.NewUninstall(cfg)
		u.Timeout = timeout
		r, err := u.Run(name)
		if err != nil {
			return nil, err
		}
		return result(r.Release, r.Info), nil
	}
	ch, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	vals, err := (&values.Options{ValueFiles: valueFiles}).MergeValues(getter.Providers{})
	if err != nil {
		return nil, err
	}
	var r *release.Release
	switch op {
	case "install":
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.CreateNamespace, in.Timeout = name, namespace, true, timeout
		r, err = in.RunWithContext(ctx, ch, vals)
	case "upgrade":
		up := action.NewUpgrade(cfg)
		up.Namespace, up.Timeout = namespace, timeout
		r, err = up.RunWithContext(ctx, name, ch, vals)
	default:
		return nil, fmt.Errorf("unknown operation %q", op)
	}
	if err != nil {
		return nil, err
	}
	return result(r, ""), nil
}

func result(r *release.Release, info string) *Result {
	res := &Result{Info: info}
	if r != nil {
		res.Name, res.Namespace, res.Revision, res.Manifest = r.Name, r.Namespace, r.Version, r.Manifest
		if r.Info != nil {
			res.Status = r.Info.Status.String()
		}
	}
	return res
}
