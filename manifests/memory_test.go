package manifests_test

import (
	"bytes"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// supervisorMemoryMiB is what the chart adds to the FUSE servers' budget
// for the supervisor itself (rekey.supervisorMemoryMiB).
const supervisorMemoryMiB = 128

// TestFuseMemory: in every variant the supervisor runs each FUSE server
// with --server-memory-mib=$(SERVER_MEMORY_MIB), and its container's
// memory limit holds at least one server's budget besides the
// supervisor's own; with the chart's defaults, 8 servers of 256 MiB.
func TestFuseMemory(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			ds := find[*appsv1.DaemonSet](t, load(t, v.kustomize), "rekey-csi-node")
			sup := container(t, ds.Spec.Template.Spec, "supervisor")
			args := expand(t, sup)
			got, ok := flagValue(args, "server-memory-mib")
			server, err := strconv.Atoi(got)
			if !ok || err != nil || server != 0 && server < 64 {
				t.Fatalf("--server-memory-mib=%q, want 0 or at least 64 (from SERVER_MEMORY_MIB)", got)
			}
			limit := sup.Resources.Limits.Memory()
			if min := resource.MustParse(strconv.Itoa(server+supervisorMemoryMiB) + "Mi"); limit.Cmp(min) < 0 {
				t.Errorf("supervisor memory limit %s is below one server's budget (%d MiB) + %d MiB", limit, server, supervisorMemoryMiB)
			}
			if v.name == "default" {
				if want := resource.MustParse(strconv.Itoa(8*256+supervisorMemoryMiB) + "Mi"); server != 256 || limit.Cmp(want) != 0 {
					t.Errorf("default: %d MiB per server, limit %s; want 256 and %s", server, limit, &want)
				}
			}
		})
	}
}

// TestFuseMemoryValues: values.schema.json and the chart refuse budgets
// that cannot work, and a memory limit set by hand.
func TestFuseMemoryValues(t *testing.T) {
	helm := tool(t, "REKEY_HELM_BIN", "helm")
	for _, tc := range []struct {
		set  []string
		want string // in helm's error
	}{
		{[]string{"node.fuseMemory.serverMiB=32"}, "serverMiB"},
		{[]string{"node.fuseMemory.serverMiB=-1"}, "serverMiB"},
		{[]string{"node.fuseMemory.budgetMiB=32"}, "budgetMiB"},
		{[]string{"node.fuseMemory.budgetMiB=512", "node.fuseMemory.serverMiB=1024"}, "less than one server's budget"},
		{[]string{"node.supervisor.resources.limits.memory=4Gi"}, "memory"},
		{[]string{"node.fuseMemory.budgetMiB=lots"}, "budgetMiB"},
	} {
		t.Run(strings.Join(tc.set, ","), func(t *testing.T) {
			args := []string{"template", "rekey", chartDir}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(helm, args...)
			cmd.Stderr = &stderr
			if err := cmd.Run(); err == nil {
				t.Fatalf("helm template %v succeeded, want it refused", tc.set)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("helm template %v: %s\nwant the error to name %q", tc.set, stderr.String(), tc.want)
			}
		})
	}
	// Accepted: no budget at all.
	objs := split(t, helmTemplate(t, "node.fuseMemory.serverMiB=0"))
	ds := objs["DaemonSet/"+namespace+"/rekey-csi-node"]
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
}
