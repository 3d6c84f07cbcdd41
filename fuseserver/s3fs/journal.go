package s3fs

import (
	"context"
	"crypto/md5" //nolint:gosec // S3 ETags are MD5 sums; no security use
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"rekey.dev/rekey/fuseserver/journal"
)

// Staging is a journal (package journal has the format): every staging
// file has a record beside it naming its object and its upload state, so
// that a server that starts on the staging directory of one that died
// (SIGKILL, OOM, node reboot) uploads what the application wrote
// (recoverStaging) and nothing is ever deleted before the bucket has it.
//
// When records are written (fileState.mu held):
//   - a new staging file: its record first (dirty for a new file, uploaded
//     for a copy of the object; not fsynced: if a node reboot lost it while
//     the data survived, the data is kept as a file without a record),
//     then the file;
//   - before the first write or truncate that makes clean staging dirty:
//     dirty, fsynced, so no node reboot can leave changed data behind a
//     record that calls it uploaded;
//   - after an upload: uploaded, with the object's new ETag as the base
//     (not fsynced: a lost update only makes recovery compare once more);
//   - before acknowledged parts of a streamed upload are punched out of
//     the staging file: the upload ID, part size and the parts with their
//     ETags, fsynced, so a later process can complete the upload;
//   - on unlink of dirty data: deleted (the application deleted it;
//     recovery must not bring it back; not fsynced, so unlinking a
//     temporary file stays cheap: a node reboot right after may upload
//     it once more);
//   - on rename: the new key;
//   - before an upload of dirty data to its own key: when it began
//     (uploadStarted, not fsynced), cleared by the record after it.
//
// Data files are removed before their record, so a crash in between
// leaves a record without data (removable), never data without a record.
//
// Recovery and conflicts: a dirty record is uploaded only if the object is
// still what this mount last saw (its base): the same ETag, or still
// absent for a new file; with an unknown base (a truncate that opened an
// object without reading it), absent or last modified before the second
// in which the data became dirty (server time against node time). An object whose content already equals the
// staged data (the earlier process uploaded it and died before its record
// said so) only cleans the record; one last modified since an upload the
// record shows as begun and not ended is that upload, with the data
// written to since (uploaded again). Anything else is a conflict: another
// client changed or deleted the object meanwhile, and rekey overwrites no
// one: the staging file and record stay on disk, detached from the mount,
// and are reported (Options.OnRetained). So are staging files without a
// record (version 0.1 wrote none), records this build cannot read, records
// of another bucket or prefix, and streamed uploads whose server-side
// upload is gone after parts were released from staging (their bytes are
// no longer on the node). Upload failures (access denied, the endpoint
// down) are reported once and retried in the background like any other
// staged file.
//
// Resume: recovered dirty files are ordinary fileStates in FS.files (with
// recoveredFrom set), so an open of the key from the application sees
// and extends the recovered data. A later change that re-attaches file
// handles the kernel still holds across a server restart finds the state
// with FS.recovered(key).

// Retained is staged data kept on the node because it could not be
// uploaded (or could not be recognised). It holds no secret.
type Retained struct {
	// Key is the object key (with the prefix), or a description of a
	// staging file that names none ("stage-… (no record)").
	Key string
	// StagingFile is the path of the data on the node.
	StagingFile string
	// Reason says why it was kept.
	Reason string
}

// jrec is the journal side of a fileState (guarded by fileState.mu).
type jrec struct {
	path       string        // the record; "" for a state without staging
	state      journal.State // as last written; "" before the first record
	dirtySince time.Time
	base       *journal.Base
	// The streamed upload, once parts of it were recorded as acknowledged.
	uploadID string
	partSize int64
	acked    []journal.Part
	// uploadStarted: an upload of the data to its own key began then and
	// has not been recorded as done (journal.Record.UploadStarted).
	uploadStarted time.Time
}

// errRetained is wrapped by the sync error of a state whose data recovery
// kept on disk instead of uploading.
var errRetained = errors.New("staged data kept on the node, not uploaded")

// relKey is key relative to the mount's prefix.
func (f *FS) relKey(key string) string { return strings.TrimPrefix(key, f.opts.Prefix) }

// newStagingFile creates the staging file of key, its record first: dirty
// or uploaded, with base. It returns the file and its jrec.
func (f *FS) newStagingFile(key string, dirty bool, base *journal.Base) (*os.File, jrec, error) {
	path := f.opts.StagingDir + "/" + journal.NewName()
	rec := jrec{path: journal.RecordPath(path), state: journal.StateUploaded, base: base}
	if dirty {
		rec.state, rec.dirtySince = journal.StateDirty, time.Now()
	}
	if err := journal.Write(rec.path, f.record(key, 0, 0, rec), false); err != nil {
		return nil, jrec{}, fmt.Errorf("create staging record: %w", err)
	}
	file, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600) //nolint:gosec // in the staging dir
	if err != nil {
		_ = os.Remove(rec.path)
		return nil, jrec{}, fmt.Errorf("create staging file: %w", err)
	}
	return file, rec, nil
}

// record is the journal record of key with rec.
func (f *FS) record(key string, size int64, gen uint64, rec jrec) journal.Record {
	r := journal.Record{Version: journal.Version, Bucket: f.opts.Bucket, Prefix: f.opts.Prefix, Key: f.relKey(key),
		State: rec.state, Size: size, Generation: gen, Base: rec.base, Updated: time.Now().UTC()}
	if !rec.uploadStarted.IsZero() {
		r.UploadStarted = rec.uploadStarted.UTC()
	}
	if rec.state == journal.StateDirty {
		r.DirtySince = rec.dirtySince.UTC()
	}
	if rec.uploadID != "" && len(rec.acked) > 0 {
		r.Multipart = &journal.Multipart{UploadID: rec.uploadID, PartSize: rec.partSize, Acknowledged: rec.acked}
	}
	return r
}

// writeRecordLocked writes the record of st as it is (st.mu held).
func (f *FS) writeRecordLocked(st *fileState, durable bool) error {
	if st.rec.path == "" {
		return nil
	}
	return journal.Write(st.rec.path, f.record(st.key, st.size, st.gen, st.rec), durable)
}

// markDirtyLocked records st as dirty, durably, before its staging file
// changes (st.mu held). Clean staging whose record cannot be written must
// not change: a crash would leave the change behind an "uploaded" record.
func (f *FS) markDirtyLocked(st *fileState) error {
	if st.rec.state == journal.StateDirty || st.rec.path == "" || st.deleted {
		return nil
	}
	prev := st.rec
	st.rec.state, st.rec.dirtySince = journal.StateDirty, time.Now()
	if err := f.writeRecordLocked(st, true); err != nil {
		st.rec = prev
		return fmt.Errorf("staging record of %s: %w", st.key, err)
	}
	return nil
}

// recordUploadedLocked records that generation gen of st reached the
// bucket as an object with etag (st.mu held). The record says uploaded
// only if nothing was written since.
func (f *FS) recordUploadedLocked(st *fileState, gen uint64, etag string) {
	if st.rec.path == "" || st.deleted {
		return
	}
	st.rec.base = nil
	if etag != "" {
		st.rec.base = &journal.Base{ETag: etag}
	}
	st.rec.uploadID, st.rec.partSize, st.rec.acked = "", 0, nil
	st.rec.uploadStarted = time.Time{}
	if gen == st.gen {
		st.rec.state = journal.StateUploaded
	}
	if err := f.writeRecordLocked(st, false); err != nil {
		f.log.Error(err, "staging record not updated after the upload; a restarted server compares the object again", "key", st.key)
	}
}

// recordUploadStartLocked records that an upload of st to its own key
// begins (st.mu held), before its first request: if this process dies
// after the bucket took it but before recordUploadedLocked, the next
// process recognises the object as this mount's upload rather than a
// conflict (verifyLocked). Not fsynced: a node reboot also ends the
// connection, and a lost record only makes recovery stricter.
func (f *FS) recordUploadStartLocked(st *fileState) {
	if st.rec.path == "" || st.deleted || st.rec.state != journal.StateDirty {
		return
	}
	st.rec.uploadStarted = time.Now()
	if err := f.writeRecordLocked(st, false); err != nil {
		f.log.V(1).Info("staging record not updated before an upload", "key", st.key, "error", err.Error())
	}
}

// recordDeletedLocked records that the data of st is not to be uploaded
// (st.mu held): the application unlinked or overwrote the file.
func (f *FS) recordDeletedLocked(st *fileState) {
	if st.rec.path == "" || st.file == nil || st.rec.state != journal.StateDirty {
		return // a clean record is removable as it is
	}
	st.rec.state = journal.StateDeleted
	if err := f.writeRecordLocked(st, false); err != nil {
		f.log.Error(err, "staging record not marked deleted", "key", st.key)
	}
}

// recordAckedLocked records the parts of st's stream acknowledged by the
// server (indexes), durably, before they are punched out of staging
// (st.mu and the stream's mu held).
func (f *FS) recordAckedLocked(st *fileState, s *stream, idx []int) error {
	if st.rec.path == "" {
		return nil
	}
	prev := st.rec
	st.rec.uploadID, st.rec.partSize = aws.ToString(s.uploadID), s.partSize
	st.rec.acked = slices.Clone(st.rec.acked)
	for _, i := range idx {
		st.rec.acked = append(st.rec.acked, journal.Part{Number: int32(i + 1), ETag: aws.ToString(s.parts[i].ETag)})
	}
	slices.SortFunc(st.rec.acked, func(a, b journal.Part) int { return int(a.Number - b.Number) })
	st.rec.acked = slices.CompactFunc(st.rec.acked, func(a, b journal.Part) bool { return a.Number == b.Number })
	if err := f.writeRecordLocked(st, true); err != nil {
		st.rec = prev
		return err
	}
	return nil
}

// recovered returns the state that recovery made for key from the journal
// of an earlier process, or nil. See the resume note above.
func (f *FS) recovered(key string) *fileState {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st := f.files[key]; st != nil && st.recoveredFrom {
		return st
	}
	return nil
}

// Retained returns what this FS kept on the node instead of uploading,
// since it started.
func (f *FS) Retained() []Retained {
	f.retainedMu.Lock()
	defer f.retainedMu.Unlock()
	return slices.Clone(f.retained)
}

// report hands retained entries to Options.OnRetained and remembers them.
func (f *FS) report(rs []Retained) {
	if len(rs) == 0 {
		return
	}
	for _, r := range rs {
		f.log.Info("staged data kept on the node, not uploaded", "key", r.Key, "stagingFile", r.StagingFile, "reason", r.Reason)
	}
	f.retainedMu.Lock()
	f.retained = append(f.retained, rs...)
	f.retainedMu.Unlock()
	if f.opts.OnRetained != nil {
		f.opts.OnRetained(rs)
	}
}

// recoverStaging reads the journal of the staging directory (New): clean
// entries are removed, dirty ones become states uploaded in the
// background, and whatever cannot be used is kept and reported.
func (f *FS) recoverStaging() {
	entries, temps, err := journal.Scan(f.opts.StagingDir)
	if err != nil {
		f.log.Error(err, "staging directory not readable; nothing recovered")
		return
	}
	for _, t := range temps {
		_ = os.Remove(t) // a record being written; the renamed one stands
	}
	var (
		kept      []Retained
		recovered []*fileState
		byKey     = map[string]int{} // index in recovered
	)
	keep := func(e journal.Entry, key, reason string) {
		if key == "" {
			key = e.Describe()
		}
		kept = append(kept, Retained{Key: key, StagingFile: e.DataPath, Reason: reason})
	}
	for _, e := range entries {
		switch {
		case e.Err != nil && e.HasData:
			keep(e, "", e.Err.Error())
			continue
		case e.Err != nil:
			f.log.Error(e.Err, "unreadable staging record without data kept", "record", e.RecordPath)
			continue
		case !e.HasRecord:
			keep(e, "", "a staging file without a record (written by rekey 0.1, or not by rekey): its object is unknown")
			continue
		case e.Removable():
			if err := journal.Remove(e); err != nil {
				f.log.Error(err, "removing an uploaded staging file", "stagingFile", e.DataPath)
			}
			continue
		}
		r := e.Record
		key := r.Prefix + r.Key
		if r.Bucket != f.opts.Bucket || r.Prefix != f.opts.Prefix {
			keep(e, key, fmt.Sprintf("recorded for bucket %q prefix %q, this mount serves bucket %q prefix %q", r.Bucket, r.Prefix, f.opts.Bucket, f.opts.Prefix))
			continue
		}
		st, err := f.recoveredState(e)
		if err != nil {
			keep(e, key, err.Error())
			continue
		}
		if i, dup := byKey[key]; dup {
			// Two dirty stagings of one key: the newer replaced the
			// older (its deleted record did not make it to disk).
			older := recovered[i]
			if st.rec.dirtySince.Before(older.rec.dirtySince) {
				older, st = st, older
			}
			recovered[i] = st
			_ = older.file.Close()
			kept = append(kept, Retained{Key: key, StagingFile: older.file.Name(), Reason: "an older staging of an object that a newer one replaced"})
			continue
		}
		byKey[key] = len(recovered)
		recovered = append(recovered, st)
	}
	f.mu.Lock()
	for _, st := range recovered {
		f.files[st.key] = st
	}
	f.mu.Unlock()
	for _, st := range recovered {
		st.mu.Lock()
		f.chargeLocked(st)
		st.mu.Unlock()
	}
	for _, st := range recovered {
		f.log.Info("recovered staged data of an earlier server; uploading it", "key", st.key, "size", st.size, "streamed", st.stream != nil)
		f.scheduleUpload(st, 0)
	}
	f.report(kept)
}

// recoveredState opens the staging file of a dirty entry as a state whose
// conflict check is pending.
func (f *FS) recoveredState(e journal.Entry) (*fileState, error) {
	r := e.Record
	file, err := os.OpenFile(e.DataPath, os.O_RDWR, 0) //nolint:gosec // in the staging dir
	if err != nil {
		return nil, fmt.Errorf("open staging file: %w", err)
	}
	fi, err := file.Stat()
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("stat staging file: %w", err)
	}
	st := &fileState{key: r.Prefix + r.Key, file: file, size: fi.Size(), mtime: fi.ModTime(),
		gen: r.Generation + 1, recoveredFrom: true, verify: true,
		rec: jrec{path: e.RecordPath, state: journal.StateDirty, dirtySince: r.DirtySince, base: r.Base, uploadStarted: r.UploadStarted}}
	if m := r.Multipart; m != nil && len(m.Acknowledged) > 0 {
		last := int64(m.Acknowledged[len(m.Acknowledged)-1].Number)
		if last*m.PartSize > st.size {
			_ = file.Close()
			return nil, fmt.Errorf("acknowledged part %d lies beyond the staged size %d", last, st.size)
		}
		st.rec.uploadID, st.rec.partSize, st.rec.acked = m.UploadID, m.PartSize, m.Acknowledged
		st.released = make([]bool, last)
		for _, p := range m.Acknowledged {
			st.released[p.Number-1] = true
		}
		st.releasedPart = m.PartSize
		st.streamable = true
		st.stream = f.resumeStream(st.key, file, m)
	}
	return st, nil
}

// resumeStream is the stream of an upload an earlier process started:
// its acknowledged parts are done, every other part below the last of
// them is uploaded again from staging by finish.
func (f *FS) resumeStream(key string, file *os.File, m *journal.Multipart) *stream {
	ctx, cancel := context.WithCancel(f.bgCtx)
	created := make(chan struct{})
	close(created)
	s := &stream{f: f, key: key, file: file, partSize: m.PartSize, ctx: ctx, cancel: cancel,
		created: created, uploadID: aws.String(m.UploadID), sem: make(chan struct{}, partConcurrency),
		progress: make(chan struct{}, 1)}
	s.queued = int(m.Acknowledged[len(m.Acknowledged)-1].Number)
	s.parts = make([]types.CompletedPart, s.queued)
	for _, p := range m.Acknowledged {
		s.parts[p.Number-1] = types.CompletedPart{ETag: aws.String(p.ETag), PartNumber: aws.Int32(p.Number)}
	}
	return s
}

// verdict is what recovery does with a dirty staging.
type verdict int

const (
	verdictUpload   verdict = iota
	verdictUploaded         // the object already has the staged content
	verdictConflict
)

// verifyLocked checks a recovered state against the object before its
// first upload (st.uploadMu held, st.mu not): it gathers the facts and
// decideRecovery decides. See the rules above.
func (f *FS) verifyLocked(ctx context.Context, st *fileState) (verdict, string, string, error) {
	st.mu.Lock()
	key, base, since, uploading := st.key, st.rec.base, st.rec.dirtySince, st.rec.uploadStarted
	st.mu.Unlock()
	rctx, cancel := f.reqCtx(ctx)
	f.count(opHead)
	out, err := f.api.HeadObject(rctx, &s3.HeadObjectInput{Bucket: &f.opts.Bucket, Key: &key})
	cancel()
	if err != nil && !isNotFound(err) {
		return 0, "", "", fmt.Errorf("head %s: %w", key, err)
	}
	facts := recoveryFacts{base: base}
	var etag string
	if err == nil {
		facts.exists = true
		etag = aws.ToString(out.ETag)
		modified := aws.ToTime(out.LastModified)
		facts.baseMatches = base != nil && base.ETag != "" && sameETag(etag, base.ETag)
		if !facts.baseMatches {
			st.mu.Lock()
			facts.stagedMatches, err = f.stagedMatchesLocked(st, aws.ToInt64(out.ContentLength), etag)
			st.mu.Unlock()
			if err != nil {
				return 0, "", "", err
			}
		}
		if m, ok := journal.ParseWriterMark(out.Metadata[journal.WriterMetadataKey]); ok && m.ID == f.writer {
			facts.ours = true
			facts.oursNotNewer = !m.DirtySince.After(since)
		}
		// LastModified has whole seconds: a write in the same second as
		// the data became dirty (or its upload began) counts as later.
		facts.uploadedSince = !uploading.IsZero() && !modified.Before(uploading.Truncate(time.Second))
		facts.modifiedBeforeDirty = modified.Before(since.Truncate(time.Second))
	}
	v, why := decideRecovery(facts)
	return v, why, etag, nil
}

// recoveryFacts is what recovery knows about a dirty staging's object.
type recoveryFacts struct {
	base   *journal.Base // the record's base (nil: unknown)
	exists bool          // the object exists; every field below needs it
	// baseMatches: its ETag is the base's; stagedMatches: it holds the
	// staged content.
	baseMatches, stagedMatches bool
	// ours: this mount uploaded it (its writer mark); oursNotNewer: from
	// data that became dirty no later than the staging's.
	ours, oursNotNewer bool
	// uploadedSince: last modified since an upload the record shows as
	// begun and not ended (objects without a mark, from older versions).
	uploadedSince bool
	// modifiedBeforeDirty: last modified before the data became dirty.
	modifiedBeforeDirty bool
}

// decideRecovery is the conflict rule of recovery (see the notes above):
// upload what replaces the object this mount last saw or wrote itself,
// recognise data already uploaded, and retain anything else.
func decideRecovery(x recoveryFacts) (verdict, string) {
	switch {
	case !x.exists && (x.base == nil || x.base.Absent):
		return verdictUpload, ""
	case !x.exists:
		return verdictConflict, "another client deleted the object while this data was staged"
	case x.baseMatches:
		return verdictUpload, ""
	case x.stagedMatches:
		return verdictUploaded, ""
	case x.ours && x.oursNotNewer:
		// An upload of this mount whose end the record does not show (the
		// process died between the two), or of an older staging of the
		// same key (an application that re-created the file while that
		// upload ran): the staged data is newer. Seen in TestResumeUnderLoad.
		return verdictUpload, ""
	case x.ours:
		return verdictConflict, "the bucket holds newer data written through this mount; this staging is older"
	case x.uploadedSince:
		// The same, for an object without a writer mark (written by an
		// older rekey): last modified since this mount began to upload.
		return verdictUpload, ""
	case x.base == nil && x.modifiedBeforeDirty:
		return verdictUpload, ""
	case x.base == nil:
		return verdictConflict, "the object was written by another client after this data was staged"
	case x.base.Absent:
		return verdictConflict, "another client created the object while this data was staged"
	default:
		return verdictConflict, "another client changed the object while this data was staged"
	}
}

// writerMetaLocked is the user metadata of an upload of st's staged data
// (st.mu held): this mount's writer mark with the time the data became
// dirty, or now for clean data (a rename's copy of it).
func (f *FS) writerMetaLocked(st *fileState) map[string]string {
	since := st.rec.dirtySince
	if since.IsZero() || st.rec.state != journal.StateDirty {
		since = time.Now()
	}
	meta := f.uploadMetaLocked(st)
	meta[journal.WriterMetadataKey] = journal.WriterMark{ID: f.writer, DirtySince: since}.String()
	return meta
}

// sameETag compares ETags without their quotes.
func sameETag(a, b string) bool { return strings.Trim(a, `"`) == strings.Trim(b, `"`) }

// stagedMatchesLocked reports whether the object (size, etag) has the
// staged content of st (st.mu held): its ETag is the MD5 of the staging,
// or the multipart ETag of it for a part size this mount uses (released
// parts count with their recorded ETags).
func (f *FS) stagedMatchesLocked(st *fileState, size int64, etag string) (bool, error) {
	if size != st.size {
		return false, nil
	}
	etag = strings.Trim(etag, `"`)
	n := 0
	if i := strings.LastIndexByte(etag, '-'); i >= 0 {
		var err error
		if n, err = strconv.Atoi(etag[i+1:]); err != nil || n <= 0 {
			return false, nil //nolint:nilerr // not a multipart ETag we know: no match
		}
	}
	if n == 0 {
		if st.hasReleasedLocked() {
			return false, nil
		}
		h := md5.New() //nolint:gosec // an S3 ETag
		if _, err := io.Copy(h, io.NewSectionReader(st.file, 0, st.size)); err != nil {
			return false, fmt.Errorf("read staging of %s: %w", st.key, err)
		}
		return hex.EncodeToString(h.Sum(nil)) == etag, nil
	}
	known := map[int32]string{}
	sizes := []int64{f.opts.PartSize, f.partSizeFor(size)}
	if st.rec.partSize > 0 {
		sizes = append([]int64{st.rec.partSize}, sizes...)
		for _, p := range st.rec.acked {
			known[p.Number] = strings.Trim(p.ETag, `"`)
		}
	}
	for i, ps := range sizes {
		if (size+ps-1)/ps != int64(n) || slices.Contains(sizes[:i], ps) {
			continue
		}
		sum, ok, err := f.multipartETag(st, ps, n, known)
		if err != nil {
			return false, err
		}
		if ok && sum == etag {
			return true, nil
		}
	}
	return false, nil
}

// multipartETag computes the multipart ETag of st's staging in n parts of
// ps bytes; a released part needs its ETag in known (ok false otherwise).
func (f *FS) multipartETag(st *fileState, ps int64, n int, known map[int32]string) (string, bool, error) {
	all := md5.New() //nolint:gosec // an S3 ETag
	for i := range n {
		off := int64(i) * ps
		if st.overlapsReleasedLocked(off, min(ps, st.size-off)) {
			e, ok := known[int32(i+1)]
			if !ok || ps != st.releasedPart {
				return "", false, nil
			}
			b, err := hex.DecodeString(e)
			if err != nil {
				return "", false, nil //nolint:nilerr // not an MD5 ETag: no match
			}
			all.Write(b)
			continue
		}
		h := md5.New() //nolint:gosec // an S3 ETag
		if _, err := io.Copy(h, io.NewSectionReader(st.file, off, min(ps, st.size-off))); err != nil {
			return "", false, fmt.Errorf("read staging of %s: %w", st.key, err)
		}
		all.Write(h.Sum(nil))
	}
	return hex.EncodeToString(all.Sum(nil)) + "-" + strconv.Itoa(n), true, nil
}

// checkRecoveredLocked runs the conflict check of a recovered state before
// its first upload (st.uploadMu held). It returns done when nothing is
// left to upload (the object has the data, or the data was retained).
func (f *FS) checkRecoveredLocked(ctx context.Context, st *fileState) (done bool, err error) {
	st.mu.Lock()
	pending := st.verify && !st.deleted && st.file != nil
	st.mu.Unlock()
	if !pending {
		return false, nil
	}
	v, why, etag, err := f.verifyLocked(ctx, st)
	if err != nil {
		return false, err
	}
	switch v {
	case verdictUploaded:
		st.mu.Lock()
		st.verify = false
		st.uploaded = st.gen
		if st.stream != nil {
			st.stream.cancel() // completed by the earlier process
			st.stream = nil
		}
		var drop *os.File
		if st.hasReleasedLocked() { // holes: reads must go to the bucket
			drop, st.file, st.released, st.streamable = st.file, nil, nil, false
			f.chargeLocked(st)
		}
		// With the object's ETag as the base: with none, the next
		// recovery would take this very object for another client's
		// write (LastModified after dirtySince) once the application
		// writes again (seen in TestResumeUnderLoad).
		f.recordUploadedLocked(st, st.gen, etag)
		st.mu.Unlock()
		if drop != nil {
			f.removeStagingFile(drop)
		}
		f.log.Info("recovered staged data was uploaded already", "key", st.key)
		return true, nil
	case verdictConflict:
		f.retain(st, why)
		return true, fmt.Errorf("%s: %s: %w", st.key, why, errRetained)
	}
	st.mu.Lock()
	st.verify = false
	if etag != "" {
		// The object this data now replaces, in the record too: if this
		// process dies before its own upload reaches the bucket, the next
		// one must not take that object (perhaps an earlier process's
		// unrecorded upload, accepted above) for another client's write
		// (seen in TestResumeUnderLoad under CPU load).
		st.rec.base = &journal.Base{ETag: etag}
		if err := f.writeRecordLocked(st, false); err != nil {
			f.log.V(1).Info("staging record has no base", "key", st.key, "error", err.Error())
		}
	}
	st.mu.Unlock()
	return false, nil
}

// retain detaches the staging of st from the mount and keeps it on disk,
// record and all, and reports it: it is never uploaded by this process.
// The key then reads from the bucket.
func (f *FS) retain(st *fileState, why string) {
	f.mu.Lock()
	st.mu.Lock()
	if f.files[st.key] == st {
		delete(f.files, st.key)
	}
	f.unkeepLocked(st)
	file := st.file
	st.file, st.released, st.streamable, st.verify = nil, nil, false, false
	f.chargeLocked(st) // retained: the reserve still sees it, the limit no longer
	if st.stream != nil {
		st.stream.cancel() // keep the server's parts: the record names them
		st.stream = nil
	}
	st.rec = jrec{} // the record stays as it is on disk
	st.lost = why
	key := st.key
	if file != nil {
		f.lostStates[key] = st // for handles reopened later (reopenState)
	}
	st.mu.Unlock()
	f.mu.Unlock()
	if file == nil {
		return
	}
	name := file.Name()
	_ = file.Close()
	f.report([]Retained{{Key: key, StagingFile: name, Reason: why}})
}

// isNoSuchUpload reports whether err says the multipart upload is gone.
func isNoSuchUpload(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload"
}

// uploadFailed handles a failed upload of st (background or flush): a
// streamed upload that lost its server-side upload after parts were
// released cannot be completed (those bytes are gone from the node too),
// so its staging is retained; a recovered state's first failure is
// reported. It reports whether st was retained.
func (f *FS) uploadFailed(st *fileState, err error) bool {
	st.mu.Lock()
	lost := st.hasReleasedLocked() && !st.deleted && isNoSuchUpload(err)
	first := st.recoveredFrom && !st.failureReported
	st.failureReported = true
	key, file := st.key, st.file
	st.mu.Unlock()
	if lost {
		f.retain(st, "the multipart upload is gone from the server and its acknowledged parts were released from staging: "+
			"the staging file lacks those parts (see the record)")
		return true
	}
	if first && file != nil {
		f.report([]Retained{{Key: key, StagingFile: file.Name(), Reason: "upload failed, retrying in the background: " + err.Error()}})
	}
	return false
}

// retainedState is the part of FS that recovery adds (embedded in FS).
type retainedState struct {
	retainedMu sync.Mutex
	retained   []Retained
}
