package rekeyctl

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"
)

// maxErrorWidth cuts long refusal reasons in the table.
const maxErrorWidth = 60

// source names where a mount's keys come from.
func (m Mount) source() string {
	switch {
	case m.Secret != "":
		return m.Secret
	case m.Role != "":
		return m.AuthType + ":" + m.Role
	case m.AuthType != "":
		return m.AuthType
	}
	return "-"
}

// matches is the MATCHES column.
func (m Mount) matches() string {
	switch m.State() {
	case StateCurrent:
		return "yes"
	case StateStale:
		return "NO"
	case StateUnknown:
		return "?"
	case StateNoStatus:
		return "no status yet"
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// WriteTable prints the mounts as kubectl prints objects: NAMESPACE (when
// withNamespace), POD, VOLUME, SOURCE, KEYS IN USE, MATCHES (the Secret's
// current content), AGE (of the keys in use), LAST ERROR; then a note for
// each Secret whose content could not be compared.
func WriteTable(w io.Writer, ms []Mount, withNamespace bool, now time.Time) error {
	if len(ms) == 0 {
		_, err := fmt.Fprintln(w, "No rekey mounts found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	head := "POD\tVOLUME\tSOURCE\tKEYS IN USE\tMATCHES\tAGE\tLAST ERROR"
	if withNamespace {
		head = "NAMESPACE\t" + head
	}
	fmt.Fprintln(tw, head)
	notes := map[string]string{}
	for _, m := range ms {
		age := "-"
		if !m.AppliedAt.IsZero() {
			age = duration.HumanDuration(now.Sub(m.AppliedAt))
		}
		row := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", m.Pod, m.Volume, m.source(), orDash(m.Fingerprint), m.matches(), age,
			orDash(cut(m.LastError, maxErrorWidth)))
		if withNamespace {
			row = m.Namespace + "\t" + row
		}
		fmt.Fprintln(tw, row)
		if m.SecretErr != "" {
			notes[m.Secret] = m.SecretErr
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	refs := make([]string, 0, len(notes))
	for r := range notes {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	for _, r := range refs {
		if _, err := fmt.Fprintf(w, "? %s: %s\n", r, notes[r]); err != nil {
			return err
		}
	}
	return nil
}
