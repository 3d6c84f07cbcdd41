package storageclass

import (
	"fmt"
	"regexp"
	"strings"
)

// Vars are the values a template may use.
type Vars struct {
	PVName, PVCName, PVCNamespace string
	// PVCAnnotations are the claim's annotations, for
	// ${pvc.annotations['key']}; nil where templates may not use them.
	PVCAnnotations map[string]string
}

// Template variables, as external-provisioner spells them.
const (
	VarPVName         = "pv.name"
	VarPVCName        = "pvc.name"
	VarPVCNamespace   = "pvc.namespace"
	VarPVCAnnotations = "pvc.annotations"
)

// Which variables each template may use (external-provisioner's rules for
// the secret parameters; pathPattern has no annotations: CreateVolume does
// not receive them).
var (
	pathVars            = []string{VarPVName, VarPVCName, VarPVCNamespace}
	SecretNameVars      = []string{VarPVName, VarPVCName, VarPVCNamespace, VarPVCAnnotations}
	SecretNamespaceVars = []string{VarPVName, VarPVCNamespace}
)

var (
	placeholder = regexp.MustCompile(`\$\{([^}]*)\}`)
	annotation  = regexp.MustCompile(`^pvc\.annotations\['([^']+)'\]$`)
)

// Expand replaces every ${...} of tmpl with its value. A placeholder not in
// allowed, an unterminated one, or a '$' outside one is an error naming it;
// so is a variable whose value is empty (the provisioner did not pass it).
func Expand(tmpl string, v Vars, allowed []string) (string, error) {
	if err := checkTemplate(tmpl, allowed); err != nil {
		return "", err
	}
	var firstErr error
	out := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[2 : len(m)-1]
		var val string
		switch name {
		case VarPVName:
			val = v.PVName
		case VarPVCName:
			val = v.PVCName
		case VarPVCNamespace:
			val = v.PVCNamespace
		default:
			key := annotation.FindStringSubmatch(name)[1]
			var ok bool
			if val, ok = v.PVCAnnotations[key]; !ok && firstErr == nil {
				firstErr = fmt.Errorf("template %q: the claim has no annotation %q", tmpl, key)
			}
			return val
		}
		if val == "" && firstErr == nil {
			firstErr = fmt.Errorf("template %q: ${%s} is not known here", tmpl, name)
		}
		return val
	})
	if firstErr != nil {
		return "", firstErr
	}
	return out, nil
}

// checkTemplate validates tmpl's syntax against the allowed variables.
func checkTemplate(tmpl string, allowed []string) error {
	rest := placeholder.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[2 : len(m)-1]
		for _, a := range allowed {
			if name == a || (a == VarPVCAnnotations && annotation.MatchString(name)) {
				return ""
			}
		}
		return "\x00" + name + "\x00"
	})
	if i := strings.IndexByte(rest, 0); i >= 0 {
		name := rest[i+1:]
		name = name[:strings.IndexByte(name, 0)]
		return fmt.Errorf("template %q: ${%s} is not allowed here (allowed: %s)", tmpl, name, allowedList(allowed))
	}
	if strings.Contains(rest, "$") {
		return fmt.Errorf("template %q: a '$' outside ${...} or an unterminated ${", tmpl)
	}
	return nil
}

func allowedList(allowed []string) string {
	s := make([]string, len(allowed))
	for i, a := range allowed {
		if a == VarPVCAnnotations {
			a = "pvc.annotations['<key>']"
		}
		s[i] = "${" + a + "}"
	}
	return strings.Join(s, ", ")
}
