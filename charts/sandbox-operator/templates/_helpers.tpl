{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "sandbox-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every object. The release name alone when it already
contains the chart name (`helm install sandbox-operator ...` gives
`sandbox-operator`, the operator binary's defaults), else
`<release>-<chart>`. Truncated so derived names stay within 63 characters.
*/}}
{{- define "sandbox-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sandbox-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; `app.kubernetes.io/instance` finds all of a release. */}}
{{- define "sandbox-operator.labels" -}}
helm.sh/chart: {{ include "sandbox-operator.chart" . }}
{{ include "sandbox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sandbox-operator
{{- end }}

{{- define "sandbox-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sandbox-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of the controller Pods (every replica also serves the webhook). */}}
{{- define "sandbox-operator.controllerSelectorLabels" -}}
{{ include "sandbox-operator.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "sandbox-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sandbox-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest when a digest pins one build, else repository:tag (appVersion by default). */}}
{{- define "sandbox-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of both webhook configurations (the operator injects caBundle into them). */}}
{{- define "sandbox-operator.webhookConfigName" -}}
{{- include "sandbox-operator.fullname" . }}
{{- end }}

{{- define "sandbox-operator.webhookServiceName" -}}
{{- printf "%s-webhook" (include "sandbox-operator.fullname" .) }}
{{- end }}

{{/* The Secret the operator keeps its self-managed CA and serving cert in. */}}
{{- define "sandbox-operator.certSecretName" -}}
{{- printf "%s-webhook-tls" (include "sandbox-operator.fullname" .) }}
{{- end }}

{{/* The Secret cert-manager writes the serving cert to (certManager.enabled). */}}
{{- define "sandbox-operator.certManagerSecretName" -}}
{{- printf "%s-webhook-cert-manager" (include "sandbox-operator.fullname" .) }}
{{- end }}

{{- define "sandbox-operator.leaseName" -}}
{{- printf "%s-leader" (include "sandbox-operator.fullname" .) }}
{{- end }}

{{/*
Namespace of the `helm test` objects: the watched namespace when the
operator watches one, else tests.namespace. Never the release namespace by
default: the operator skips its own namespace and kube-system (admission
does not apply there), so a claim there would never become Ready.
*/}}
{{- define "sandbox-operator.testNamespace" -}}
{{- default .Values.tests.namespace .Values.controller.watchNamespace }}
{{- end }}

{{/*
Where the API server sends admission reviews: a Service in the cluster
(default) or a URL (local control planes that cannot reach Service IPs).
Call with (dict "root" $ "path" "/mutate").
*/}}
{{- define "sandbox-operator.webhookClientConfig" -}}
{{- $root := .root }}
{{- if $root.Values.webhook.url }}
url: {{ printf "%s%s" (trimSuffix "/" $root.Values.webhook.url) .path | quote }}
{{- else }}
service:
  name: {{ include "sandbox-operator.webhookServiceName" $root }}
  namespace: {{ $root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- end }}
{{- end }}

{{/*
Namespaces admission applies to: exactly the watched namespace when the
operator watches one, else all but kube-system and the operator's own (so a
broken webhook never locks the operator out of repairing itself) and any
listed in webhook.excludeNamespaces.
*/}}
{{- define "sandbox-operator.webhookNamespaceSelector" -}}
matchExpressions:
{{- if .Values.controller.watchNamespace }}
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      - {{ .Values.controller.watchNamespace | quote }}
{{- else }}
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- range (concat (list "kube-system" .Release.Namespace) .Values.webhook.excludeNamespaces | uniq) }}
      - {{ . | quote }}
      {{- end }}
{{- end }}
{{- end }}

{{/* The four resources the webhooks see, on create and update. */}}
{{- define "sandbox-operator.webhookRules" -}}
- apiGroups: ["agents.x-k8s.io"]
  apiVersions: ["v1alpha1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["sandboxes"]
  scope: Namespaced
- apiGroups: ["extensions.agents.x-k8s.io"]
  apiVersions: ["v1alpha1"]
  operations: ["CREATE", "UPDATE"]
  resources: ["sandboxtemplates", "sandboxclaims", "sandboxwarmpools"]
  scope: Namespaced
{{- end }}

{{/* The validating webhook's: the above, and a pool's scale requests
(kubectl scale, an HPA, KEDA), bounded by the policy's maxPoolReplicas like a
write of the pool itself (src/webhook/config.rs validating_rules). */}}
{{- define "sandbox-operator.validatingWebhookRules" -}}
{{ include "sandbox-operator.webhookRules" . }}
- apiGroups: ["extensions.agents.x-k8s.io"]
  apiVersions: ["v1alpha1"]
  operations: ["UPDATE"]
  resources: ["sandboxwarmpools/scale"]
  scope: Namespaced
{{- end }}

{{/* Pod-level security context of the restricted Pod Security profile. */}}
{{- define "sandbox-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "sandbox-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* What the controllers do to sandbox objects and the objects made for them. */}}
{{- define "sandbox-operator.workloadRules" -}}
# Sandboxes: created for claims, deleted when expired; status by server-side apply.
- apiGroups: ["agents.x-k8s.io"]
  resources: ["sandboxes"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["agents.x-k8s.io"]
  resources: ["sandboxes/status"]
  verbs: ["get", "patch"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxtemplates", "sandboxwarmpools"]
  verbs: ["get", "list", "watch"]
# Claims are deleted when their lifecycle says so.
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxclaims"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxclaims/status", "sandboxwarmpools/status"]
  verbs: ["get", "patch"]
# An ownerReference to one of these needs update on the owner's finalizers
# (blockOwnerDeletion, and the ownership guard: files/ownership-guard.yaml).
- apiGroups: ["agents.x-k8s.io"]
  resources: ["sandboxes/finalizers"]
  verbs: ["update"]
- apiGroups: ["extensions.agents.x-k8s.io"]
  resources: ["sandboxclaims/finalizers", "sandboxwarmpools/finalizers", "sandboxtemplates/finalizers"]
  verbs: ["update"]
# Warm and cold Pods; a steal is a conditioned patch.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The headless Service of each Sandbox.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create"]
# The deny-by-default NetworkPolicies of each claim, template and pool, and
# of each standalone Sandbox; update/patch bring one the operator controls up
# to date after the policy file's network section (or the template's rules)
# changed, and make a standalone Sandbox's Pod a co-owner of its policy;
# delete removes a standalone Sandbox's when the policy file no longer wants
# one; list/watch let it see one deleted, and make it again at once.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["events.k8s.io", ""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* The operator's own Sandbox CREATEs skip the webhooks (see webhooks.yaml). */}}
{{- define "sandbox-operator.operatorSandboxCreateCondition" -}}
- name: not-the-operators-own-sandbox-create
  expression: >-
    !(request.userInfo.username == 'system:serviceaccount:{{ .Release.Namespace }}:{{ include "sandbox-operator.serviceAccountName" . }}'
    && request.resource.group == 'agents.x-k8s.io'
    && request.resource.resource == 'sandboxes' && request.operation == 'CREATE')
{{- end }}

{{- define "sandbox-operator.webhookMatchConditions" -}}
{{- if .Values.webhook.skipOperatorSandboxCreates }}
matchConditions:
  {{- include "sandbox-operator.operatorSandboxCreateCondition" . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The validating webhook's: the above, and claim CREATEs left to the
mutating webhook, which validates them (see webhooks.yaml). */}}
{{- define "sandbox-operator.validatingWebhookMatchConditions" -}}
{{- if or .Values.webhook.skipOperatorSandboxCreates .Values.webhook.claimCreatesInOneCall }}
matchConditions:
{{- if .Values.webhook.skipOperatorSandboxCreates }}
  {{- include "sandbox-operator.operatorSandboxCreateCondition" . | nindent 2 }}
{{- end }}
{{- if .Values.webhook.claimCreatesInOneCall }}
  - name: claim-creates-are-checked-by-the-mutating-webhook
    expression: >-
      !(request.resource.group == 'extensions.agents.x-k8s.io'
      && request.resource.resource == 'sandboxclaims' && request.operation == 'CREATE')
{{- end }}
{{- end }}
{{- end }}

{{/*
The admin port (/metrics, /healthz, /readyz): the port of metrics.address
("0.0.0.0:8080", "[::]:8080"). The container port, the metrics Service and
the NetworkPolicy all follow it.
*/}}
{{- define "sandbox-operator.metricsPort" -}}
{{- splitList ":" .Values.metrics.address | last | int -}}
{{- end }}
