package examples_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"rekey.dev/rekey/csidriver/storageclass"
	"rekey.dev/rekey/csidriver/volumecontext"
	"rekey.dev/rekey/internal/contract"
)

var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// objects are the examples' objects, by kind.
type objects struct {
	namespaces  map[string]*corev1.Namespace
	secrets     map[string]*corev1.Secret // namespace/name
	pvs         map[string]*corev1.PersistentVolume
	pvcs        map[string]*corev1.PersistentVolumeClaim // namespace/name
	deployments []*appsv1.Deployment
	sas         map[string]*corev1.ServiceAccount // namespace/name
	classes     map[string]*storagev1.StorageClass
}

func isKustomization(path string) bool { return filepath.Base(path) == "kustomization.yaml" }

// load decodes every document of every example file strictly.
func load(t *testing.T) objects {
	t.Helper()
	o := objects{namespaces: map[string]*corev1.Namespace{}, secrets: map[string]*corev1.Secret{},
		pvs: map[string]*corev1.PersistentVolume{}, pvcs: map[string]*corev1.PersistentVolumeClaim{},
		sas: map[string]*corev1.ServiceAccount{}, classes: map[string]*storagev1.StorageClass{}}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") || isKustomization(path) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := rd.Read()
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return err
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := strictDecoder.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s: %v", path, err)
				continue
			}
			add(t, &o, path, obj)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func add(t *testing.T, o *objects, path string, obj runtime.Object) {
	t.Helper()
	switch v := obj.(type) {
	case *corev1.Namespace:
		o.namespaces[v.Name] = v
	case *corev1.Secret:
		o.secrets[v.Namespace+"/"+v.Name] = v
	case *corev1.PersistentVolume:
		o.pvs[v.Name] = v
	case *corev1.PersistentVolumeClaim:
		o.pvcs[v.Namespace+"/"+v.Name] = v
	case *appsv1.Deployment:
		o.deployments = append(o.deployments, v)
	case *corev1.ServiceAccount:
		o.sas[v.Namespace+"/"+v.Name] = v
	case *storagev1.StorageClass:
		o.classes[v.Name] = v
	default:
		t.Errorf("%s: unexpected %T in the examples", path, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l...)
		}
	}
	return out
}

// secretData is a Secret's data and stringData as the CSI driver sees it.
func secretData(s *corev1.Secret) map[string]string {
	m := map[string]string{}
	for k, v := range s.Data {
		m[k] = string(v)
	}
	for k, v := range s.StringData {
		m[k] = v
	}
	return m
}

// TestPersistentVolumes parses every rekey PV the way NodePublishVolume
// does, with its Secret, so attribute names and values cannot drift from
// csidriver/volumecontext.
func TestPersistentVolumes(t *testing.T) {
	o := load(t)
	authTypes := map[string]bool{}
	for _, pv := range o.pvs {
		csi := pv.Spec.CSI
		if csi == nil || csi.Driver != contract.DriverName {
			t.Errorf("PV %s: not an %s volume", pv.Name, contract.DriverName)
			continue
		}
		var secrets map[string]string
		if ref := csi.NodePublishSecretRef; ref != nil {
			s, ok := o.secrets[ref.Namespace+"/"+ref.Name]
			if !ok {
				t.Errorf("PV %s: nodePublishSecretRef %s/%s is not in the examples", pv.Name, ref.Namespace, ref.Name)
				continue
			}
			if pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != ref.Namespace {
				t.Errorf("PV %s: the Secret must be in the claim's namespace (projected volumes cannot cross namespaces)", pv.Name)
			}
			secrets = secretData(s)
		}
		v, err := volumecontext.Parse(csi.VolumeHandle, csi.VolumeAttributes, secrets)
		if err != nil {
			t.Errorf("PV %s: %v", pv.Name, err)
			continue
		}
		if ign := volumecontext.IgnoredAttributes(csi.VolumeAttributes); len(ign) > 0 {
			t.Errorf("PV %s: attributes the driver ignores: %v", pv.Name, ign)
		}
		authTypes[v.AuthType] = true
		if v.AuthType == contract.AuthTypeSecret && csi.NodePublishSecretRef == nil {
			t.Errorf("PV %s: secret auth without nodePublishSecretRef", pv.Name)
		}
		if v.AuthType == contract.AuthTypeRRSA && (v.STSEndpoint == "" || v.OIDCProviderARN == "" || v.RoleARN == "") {
			t.Errorf("PV %s: the RRSA example shows roleArn, oidcProviderArn and stsEndpoint", pv.Name)
		}
		if v.AuthType == contract.AuthTypeIRSA && (v.STSEndpoint == "" || v.RoleARN == "") {
			t.Errorf("PV %s: the IRSA example shows roleArn and stsEndpoint", pv.Name)
		}
		if pv.Spec.StorageClassName != "" || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
			t.Errorf("PV %s: want storageClassName \"\" and Retain (static, no provisioner)", pv.Name)
		}
	}
	for _, a := range []string{contract.AuthTypeSecret, contract.AuthTypeRRSA, contract.AuthTypeIRSA} {
		if !authTypes[a] {
			t.Errorf("no example PV with authType %s", a)
		}
	}
}

// TestClaimsAndPods checks that each claim binds its PV and each
// Deployment's claims exist and opt in to injection.
func TestClaimsAndPods(t *testing.T) {
	o := load(t)
	for key, pvc := range o.pvcs {
		if sc := pvc.Spec.StorageClassName; sc != nil && *sc != "" {
			if _, ok := o.classes[*sc]; !ok || pvc.Spec.VolumeName != "" {
				t.Errorf("PVC %s: class %q is not an example StorageClass, or the claim names a volume", key, *sc)
			}
			continue
		}
		pv, ok := o.pvs[pvc.Spec.VolumeName]
		switch {
		case pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "":
			t.Errorf("PVC %s: storageClassName must be \"\" (static binding)", key)
		case !ok:
			t.Errorf("PVC %s: volumeName %q is not an example PV", key, pvc.Spec.VolumeName)
		case pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != pvc.Namespace || pv.Spec.ClaimRef.Name != pvc.Name:
			t.Errorf("PVC %s: PV %s is reserved for another claim", key, pv.Name)
		case !slices.Equal(pv.Spec.AccessModes, pvc.Spec.AccessModes):
			t.Errorf("PVC %s: access modes %v, PV %v", key, pvc.Spec.AccessModes, pv.Spec.AccessModes)
		}
		if _, ok := o.namespaces[pvc.Namespace]; !ok {
			t.Errorf("PVC %s: namespace not in the examples", key)
		}
	}
	paths := map[string]bool{}
	for _, d := range o.deployments {
		ns, ok := o.namespaces[d.Namespace]
		if !ok {
			t.Errorf("Deployment %s: namespace %s not in the examples", d.Name, d.Namespace)
			continue
		}
		if d.Annotations[contract.InjectAnnotation] != "" {
			t.Errorf("Deployment %s: %s belongs on the pod template", d.Name, contract.InjectAnnotation)
		}
		switch {
		case d.Spec.Template.Annotations[contract.InjectAnnotation] == "true":
			paths["annotation"] = true
		case ns.Labels[contract.InjectionLabel] == contract.InjectionEnabled:
			paths["namespace"] = true
		default:
			t.Errorf("Deployment %s does not opt in to the sidecar", d.Name)
		}
		rekeyVolumes := 0
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.PersistentVolumeClaim == nil {
				continue
			}
			pvc, ok := o.pvcs[d.Namespace+"/"+v.PersistentVolumeClaim.ClaimName]
			if !ok {
				t.Errorf("Deployment %s: claim %s not in its namespace", d.Name, v.PersistentVolumeClaim.ClaimName)
				continue
			}
			if pv := o.pvs[pvc.Spec.VolumeName]; pv != nil && pv.Spec.CSI != nil && pv.Spec.CSI.Driver == contract.DriverName {
				rekeyVolumes++
			}
		}
		if rekeyVolumes == 0 {
			t.Errorf("Deployment %s uses no rekey volume: the webhook would not inject", d.Name)
		}
	}
	for _, p := range []string{"namespace", "annotation"} {
		if !paths[p] {
			t.Errorf("no example Deployment opts in by %s", p)
		}
	}
}

// onItsOwn are example directories applied alone: rrsa/ and irsa/ need an
// STS, provisioning/ needs rekey-controller.
var onItsOwn = map[string]bool{"rrsa": true, "irsa": true, "provisioning": true}

// TestKustomizations: every kustomization lists every YAML file (and every
// subdirectory with a kustomization but those onItsOwn) beside it, so
// apply -k applies them all.
func TestKustomizations(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !isKustomization(path) {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var k struct {
			Resources []string `json:"resources"`
		}
		if err := yaml.Unmarshal(b, &k); err != nil {
			return err
		}
		dir := filepath.Dir(path)
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		var want []string
		for _, e := range entries {
			switch {
			case e.IsDir():
				if _, err := os.Stat(filepath.Join(dir, e.Name(), "kustomization.yaml")); err == nil && !onItsOwn[e.Name()] {
					want = append(want, e.Name())
				}
			case strings.HasSuffix(e.Name(), ".yaml") && !isKustomization(e.Name()):
				want = append(want, e.Name())
			}
		}
		got := slices.Clone(k.Resources)
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s lists %v, the directory has %v", path, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestStorageClasses: every example class is rekey's, its parameters
// parse as CreateVolume parses them, its Secrets exist in the namespace
// of each of its claims, both modes are shown, and each has a claim.
func TestStorageClasses(t *testing.T) {
	o := load(t)
	modes := map[string]bool{}
	for _, sc := range o.classes {
		if sc.Provisioner != contract.DriverName {
			t.Errorf("StorageClass %s: provisioner %q", sc.Name, sc.Provisioner)
		}
		c, err := storageclass.Parse(sc.Parameters)
		if err != nil {
			t.Errorf("StorageClass %s: %v", sc.Name, err)
			continue
		}
		modes[map[bool]string{true: "bucket", false: "prefix"}[c.BucketMode()]] = true
		claims := 0
		for key, pvc := range o.pvcs {
			if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != sc.Name {
				continue
			}
			claims++
			v := storageclass.Vars{PVName: "pvc-0", PVCName: pvc.Name, PVCNamespace: pvc.Namespace, PVCAnnotations: pvc.Annotations}
			for _, kind := range []struct{ name, ns string }{
				{storageclass.ProvisionerSecretName, storageclass.ProvisionerSecretNamespace},
				{storageclass.NodePublishSecretName, storageclass.NodePublishSecretNamespace},
			} {
				name, err1 := storageclass.Expand(sc.Parameters[kind.name], v, storageclass.SecretNameVars)
				ns, err2 := storageclass.Expand(sc.Parameters[kind.ns], v, storageclass.SecretNamespaceVars)
				if err1 != nil || err2 != nil || o.secrets[ns+"/"+name] == nil {
					t.Errorf("StorageClass %s, PVC %s: %s gives Secret %s/%s, not in the examples (%v, %v)", sc.Name, key, kind.name, ns, name, err1, err2)
				}
			}
		}
		if claims == 0 {
			t.Errorf("StorageClass %s has no example claim", sc.Name)
		}
	}
	if !modes["prefix"] || !modes["bucket"] {
		t.Errorf("modes shown: %v, want prefix and bucket", modes)
	}
}
