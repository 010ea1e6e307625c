package agent

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func auditLines(t *testing.T, path string) []auditRecord {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditRecord
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r auditRecord
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

// A session's start record is in the log while the session runs (before
// it ends, and so if the agent dies during it); its end record follows
// with the same session ID and how it ended.
func TestAuditStartRecordWhileSessionRuns(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{WorkDir: dir}, log: slog.New(slog.DiscardHandler)}
	path := filepath.Join(dir, "audit.log")
	rec, err := a.beginAudit(auditRecord{Identity: "uid:0", ContainerID: "c1", Command: []string{"sh"}, TTY: true})
	if err != nil {
		t.Fatal(err)
	}
	// The session runs now.
	recs := auditLines(t, path)
	if len(recs) != 1 || recs[0].Event != auditStart || recs[0].SessionID == "" || recs[0].ContainerID != "c1" || recs[0].Identity != "uid:0" || recs[0].Time.IsZero() {
		t.Fatalf("while the session runs the log holds %+v, want its start record", recs)
	}
	other, err := a.beginAudit(auditRecord{Identity: "uid:0", ContainerID: "c2", Command: []string{"true"}})
	if err != nil {
		t.Fatal(err)
	}
	if other.SessionID == rec.SessionID {
		t.Fatal("two sessions share an ID")
	}
	code := int32(3)
	rec.ExitCode, rec.BytesOut = &code, 8
	a.endAudit(rec, errors.New("client went away"))
	recs = auditLines(t, path)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3: %+v", len(recs), recs)
	}
	end := recs[2]
	if end.Event != auditEnd || end.SessionID != rec.SessionID || end.ExitCode == nil || *end.ExitCode != 3 || end.BytesOut != 8 ||
		end.Error != "client went away" || end.Time.Before(recs[0].Time) {
		t.Errorf("end record %+v does not close session %s", end, rec.SessionID)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", st.Mode().Perm())
	}
}

// A session whose start cannot be recorded does not open.
func TestAuditUnwritableRefusesSession(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{WorkDir: dir, AuditLog: filepath.Join(dir, "missing", "audit.log")}, log: slog.New(slog.DiscardHandler)}
	_, err := a.beginAudit(auditRecord{Identity: "uid:0", ContainerID: "c1", Command: []string{"sh"}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "audit_log") {
		t.Fatalf("beginAudit with an unwritable log: %v, want Unavailable naming audit_log", err)
	}
}
