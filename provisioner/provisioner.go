// Package provisioner turns PersistentVolumeClaims of a StorageClass whose
// provisioner is s3.rekey.dev into PersistentVolumes, through rekey's CSI
// Controller service. It plugs into
// sigs.k8s.io/sig-storage-lib-external-provisioner (the library
// external-provisioner is built on), which watches claims and volumes,
// binds, retries and posts ProvisioningFailed Events; this package does
// what external-provisioner's CSI part does: it resolves the standard
// csi.storage.k8s.io/{provisioner,node-publish}-secret-{name,namespace}
// parameters and their templates, reads the provisioner Secret, calls
// CreateVolume and DeleteVolume, and writes the PV (nodePublishSecretRef,
// volume attributes, reclaim policy), so provisioned volumes rotate keys
// exactly as static ones do.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"rekey.dev/rekey/csidriver/storageclass"
	"rekey.dev/rekey/internal/contract"
)

// Annotations on a provisioned PV naming the provisioner Secret that
// DeleteVolume needs (external-provisioner's names), so deletion works
// after the StorageClass or the claim is gone.
const (
	AnnDeletionSecretName      = "volume.kubernetes.io/provisioner-deletion-secret-name"      //nolint:gosec // an annotation name, not a credential
	AnnDeletionSecretNamespace = "volume.kubernetes.io/provisioner-deletion-secret-namespace" //nolint:gosec // an annotation name, not a credential
)

// EventReasonParameterIgnored is the Warning Event on a claim whose
// StorageClass has a parameter rekey accepts but ignores (csi-s3's mounter).
const EventReasonParameterIgnored = "ParameterIgnored"

// maxDeleteCalls bounds the DeleteVolume calls of one Delete; past it the
// library retries the PV later (each call removes a bounded batch).
const maxDeleteCalls = 200

// Controller is the part of csi.ControllerServer the provisioner calls.
type Controller interface {
	CreateVolume(context.Context, *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error)
	DeleteVolume(context.Context, *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error)
}

// Provisioner implements controller.Provisioner.
type Provisioner struct {
	client   kubernetes.Interface
	ctrl     Controller
	recorder record.EventRecorder
	log      logr.Logger
}

var _ controller.Provisioner = (*Provisioner)(nil)

// New returns a Provisioner that reads Secrets through client and
// provisions through ctrl; recorder (may be nil) receives the
// ParameterIgnored Events.
func New(client kubernetes.Interface, ctrl Controller, recorder record.EventRecorder, log logr.Logger) *Provisioner {
	return &Provisioner{client: client, ctrl: ctrl, recorder: recorder, log: log}
}

// secretRef is a resolved Secret reference; zero when the class names none.
type secretRef struct{ Name, Namespace string }

func (r secretRef) String() string { return r.Namespace + "/" + r.Name }

// resolveSecretRef expands the class's name and namespace templates of one
// secret kind. Both or neither must be set.
func resolveSecretRef(params map[string]string, nameKey, nsKey string, v storageclass.Vars) (secretRef, error) {
	nameT, hasName := params[nameKey]
	nsT, hasNS := params[nsKey]
	switch {
	case !hasName && !hasNS:
		return secretRef{}, nil
	case !hasName || !hasNS || nameT == "" || nsT == "":
		return secretRef{}, fmt.Errorf("StorageClass parameters %s and %s go together: set both", nameKey, nsKey)
	}
	name, err := storageclass.Expand(nameT, v, storageclass.SecretNameVars)
	if err != nil {
		return secretRef{}, fmt.Errorf("parameter %s: invalid template: %w", nameKey, err)
	}
	ns, err := storageclass.Expand(nsT, v, storageclass.SecretNamespaceVars)
	if err != nil {
		return secretRef{}, fmt.Errorf("parameter %s: invalid template: %w", nsKey, err)
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return secretRef{}, fmt.Errorf("parameter %s gives %q, not a Secret name: %s", nameKey, name, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return secretRef{}, fmt.Errorf("parameter %s gives %q, not a namespace: %s", nsKey, ns, strings.Join(errs, "; "))
	}
	return secretRef{Name: name, Namespace: ns}, nil
}

// readSecret returns the Secret's data as strings, or an error telling the
// user what to fix: the Secret is missing, or rekey-controller may not read
// it (RBAC grants it Secrets only in the namespaces it is given).
func (p *Provisioner) readSecret(ctx context.Context, ref secretRef) (map[string]string, error) {
	s, err := p.client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("provisioner Secret %s not found: create it, or fix the StorageClass's %s/-namespace", ref, storageclass.ProvisionerSecretName)
	case apierrors.IsForbidden(err):
		return nil, fmt.Errorf("rekey-controller may not read provisioner Secret %s (forbidden): grant its ServiceAccount get on Secrets in namespace %s (Helm: controller.secretNamespaces)", ref, ref.Namespace)
	case err != nil:
		return nil, fmt.Errorf("reading provisioner Secret %s: %w", ref, err)
	}
	out := make(map[string]string, len(s.Data)+len(s.StringData))
	for k, v := range s.Data {
		out[k] = string(v)
	}
	return out, nil
}

// createParams are the parameters CreateVolume receives: the class's,
// without the secret references, plus the claim and PV metadata.
func createParams(class map[string]string, opts controller.ProvisionOptions) map[string]string {
	out := map[string]string{}
	for k, v := range class {
		if !strings.HasPrefix(k, "csi.storage.k8s.io/") {
			out[k] = v
		}
	}
	out[storageclass.MetaPVName] = opts.PVName
	out[storageclass.MetaPVCName] = opts.PVC.Name
	out[storageclass.MetaPVCNamespace] = opts.PVC.Namespace
	return out
}

// Provision creates the volume of one claim and returns its PV.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*corev1.PersistentVolume, controller.ProvisioningState, error) {
	claim, class := opts.PVC, opts.StorageClass
	log := p.log.WithValues("pvc", claim.Namespace+"/"+claim.Name, "pv", opts.PVName)
	if m := claim.Spec.VolumeMode; m != nil && *m == corev1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, errors.New("block volumes are not supported: a bucket is served as a filesystem")
	}
	vars := storageclass.Vars{PVName: opts.PVName, PVCName: claim.Name, PVCNamespace: claim.Namespace, PVCAnnotations: claim.Annotations}
	provRef, err := resolveSecretRef(class.Parameters, storageclass.ProvisionerSecretName, storageclass.ProvisionerSecretNamespace, vars)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	if provRef.Name == "" {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s sets no %s and %s: rekey needs keys to create the volume's prefix or bucket",
			class.Name, storageclass.ProvisionerSecretName, storageclass.ProvisionerSecretNamespace)
	}
	nodeRef, err := resolveSecretRef(class.Parameters, storageclass.NodePublishSecretName, storageclass.NodePublishSecretNamespace, vars)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	secrets, err := p.readSecret(ctx, provRef)
	if err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	params := createParams(class.Parameters, opts)
	if c, err := storageclass.Parse(params); err == nil && p.recorder != nil {
		for _, w := range c.Warnings {
			p.recorder.Event(claim, corev1.EventTypeWarning, EventReasonParameterIgnored, "StorageClass "+class.Name+": "+w)
		}
	}
	req := &csi.CreateVolumeRequest{Name: opts.PVName, Parameters: params, Secrets: secrets,
		VolumeCapabilities: capabilities(claim.Spec.AccessModes)}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if !size.IsZero() {
		req.CapacityRange = &csi.CapacityRange{RequiredBytes: size.Value()}
	}
	resp, err := p.ctrl.CreateVolume(ctx, req)
	if err != nil {
		return nil, stateOf(err), rpcError("CreateVolume", err)
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	fs := corev1.PersistentVolumeFilesystem
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName, Annotations: map[string]string{
			AnnDeletionSecretName: provRef.Name, AnnDeletionSecretNamespace: provRef.Namespace}},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes:                   claim.Spec.AccessModes,
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			PersistentVolumeReclaimPolicy: reclaim,
			MountOptions:                  class.MountOptions,
			VolumeMode:                    &fs,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:           contract.DriverName,
				VolumeHandle:     resp.GetVolume().GetVolumeId(),
				VolumeAttributes: resp.GetVolume().GetVolumeContext(),
			}},
		},
	}
	if nodeRef.Name != "" {
		pv.Spec.CSI.NodePublishSecretRef = &corev1.SecretReference{Name: nodeRef.Name, Namespace: nodeRef.Namespace}
	}
	log.Info("provisioned", "volumeId", pv.Spec.CSI.VolumeHandle, "reclaimPolicy", reclaim)
	return pv, controller.ProvisioningFinished, nil
}

// capabilities maps the claim's access modes to CSI mount capabilities.
func capabilities(modes []corev1.PersistentVolumeAccessMode) []*csi.VolumeCapability {
	var out []*csi.VolumeCapability
	for _, m := range modes {
		mode := csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
		switch m {
		case corev1.ReadWriteOnce:
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		case corev1.ReadWriteOncePod:
			mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
		case corev1.ReadOnlyMany:
			mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		}
		out = append(out, &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode}})
	}
	if len(out) == 0 {
		out = append(out, &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER}})
	}
	return out
}

// stateOf: a call that may still be going on (timeout, unavailable) leaves
// provisioning in the background, as external-provisioner does; any other
// answer is final for this attempt.
func stateOf(err error) controller.ProvisioningState {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
		return controller.ProvisioningInBackground
	}
	return controller.ProvisioningFinished
}

// rpcError words a CSI error for an Event: the call, the code and the
// service's message (which never holds a secret).
func rpcError(call string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", call, err)
	}
	return fmt.Errorf("%s failed (%s): %s", call, st.Code(), st.Message())
}

// Delete removes the volume's prefix or bucket. Each DeleteVolume removes
// a bounded batch and answers ABORTED while more remain; Delete calls
// again, up to maxDeleteCalls, then leaves the rest to the library's retry.
func (p *Provisioner) Delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != contract.DriverName {
		return &controller.IgnoredError{Reason: "not an " + contract.DriverName + " volume"}
	}
	ref, err := p.deletionSecretRef(ctx, pv)
	if err != nil {
		return err
	}
	var secrets map[string]string
	if ref.Name != "" {
		if secrets, err = p.readSecret(ctx, ref); err != nil {
			return err
		}
	}
	req := &csi.DeleteVolumeRequest{VolumeId: pv.Spec.CSI.VolumeHandle, Secrets: secrets}
	for range maxDeleteCalls {
		_, err = p.ctrl.DeleteVolume(ctx, req)
		if status.Code(err) != codes.Aborted || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return rpcError("DeleteVolume", err)
	}
	p.log.Info("deleted", "pv", pv.Name, "volumeId", req.VolumeId)
	return nil
}

// deletionSecretRef is the provisioner Secret recorded on the PV, or, for
// PVs without the annotations, the one its StorageClass names now.
func (p *Provisioner) deletionSecretRef(ctx context.Context, pv *corev1.PersistentVolume) (secretRef, error) {
	if name := pv.Annotations[AnnDeletionSecretName]; name != "" {
		return secretRef{Name: name, Namespace: pv.Annotations[AnnDeletionSecretNamespace]}, nil
	}
	if pv.Spec.StorageClassName == "" {
		return secretRef{}, nil
	}
	class, err := p.client.StorageV1().StorageClasses().Get(ctx, pv.Spec.StorageClassName, metav1.GetOptions{})
	if err != nil {
		return secretRef{}, fmt.Errorf("StorageClass %s of PV %s (for its provisioner Secret): %w", pv.Spec.StorageClassName, pv.Name, err)
	}
	v := storageclass.Vars{PVName: pv.Name}
	if c := pv.Spec.ClaimRef; c != nil {
		v.PVCName, v.PVCNamespace = c.Name, c.Namespace
	}
	return resolveSecretRef(class.Parameters, storageclass.ProvisionerSecretName, storageclass.ProvisionerSecretNamespace, v)
}
