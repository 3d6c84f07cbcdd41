{{/* rekey.image: the full reference of one of the three images. */}}
{{- define "rekey.image" -}}
{{- printf "%s/%s:%s" .root.Values.image.registry .name (.root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* rekey.labels: the labels every object carries. */}}
{{- define "rekey.labels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/part-of: rekey
{{- end -}}

{{/* rekey.pluginDir: the driver's directory under the kubelet root. */}}
{{- define "rekey.pluginDir" -}}
{{- printf "%s/plugins/s3.rekey.dev" "$(KUBELET_DIR)" -}}
{{- end -}}

{{/* rekey.supervisorMemoryMiB: what the supervisor container needs besides
its FUSE servers (the supervisor and its init). */}}
{{- define "rekey.supervisorMemoryMiB" -}}128{{- end -}}

{{/* rekey.supervisorResources: node.supervisor.resources with the memory
limit derived from node.fuseMemory: the FUSE servers' budget plus the
supervisor's own (docs/install.md, "Memory"). */}}
{{- define "rekey.supervisorResources" -}}
{{- $mem := .Values.node.fuseMemory -}}
{{- if and (gt (int $mem.serverMiB) 0) (lt (int $mem.budgetMiB) (int $mem.serverMiB)) -}}
{{- fail (printf "node.fuseMemory.budgetMiB (%d) is less than one server's budget, node.fuseMemory.serverMiB (%d)" (int $mem.budgetMiB) (int $mem.serverMiB)) -}}
{{- end -}}
{{- $res := deepCopy (.Values.node.supervisor.resources | default dict) -}}
{{- $limit := printf "%dMi" (add (int $mem.budgetMiB) (int (include "rekey.supervisorMemoryMiB" .))) -}}
{{- $_ := set $res "limits" (merge (dict "memory" $limit) ($res.limits | default dict)) -}}
{{- toYaml $res -}}
{{- end -}}
