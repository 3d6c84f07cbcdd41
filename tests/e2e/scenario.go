package main

import (
	"context"
	"fmt"
	"time"
)

func scenario(ctx context.Context, o options, c *Cluster) error {
	return smoke(ctx, c)
}

// smoke runs a pod on the pod network (the load generator on an emptyDir)
// and waits until it reports.
func smoke(ctx context.Context, c *Cluster) error {
	t := time.Now()
	pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: smoke, namespace: default}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: load
    image: %s
    imagePullPolicy: Never
    args: ["--dir=/data", "--workers=1"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
`, loadgenImage)
	if _, err := c.kubectlIn(ctx, pod, "apply", "-f", "-"); err != nil {
		return err
	}
	if _, err := c.kubectl(ctx, "wait", "--for=condition=Ready", "pod/smoke", "--timeout=120s"); err != nil {
		out, _ := c.kubectl(ctx, "describe", "pod", "smoke")
		return fmt.Errorf("%w\n%s", err, out)
	}
	logf("smoke pod Ready in %.1fs", time.Since(t).Seconds())
	time.Sleep(2 * time.Second)
	out, err := c.kubectl(ctx, "logs", "smoke", "--tail=1")
	if err != nil {
		return err
	}
	logf("smoke pod: %s", out)
	_, err = c.kubectl(ctx, "delete", "pod", "smoke", "--wait=true", "--timeout=60s")
	return err
}
