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
