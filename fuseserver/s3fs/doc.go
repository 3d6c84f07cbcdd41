// Package s3fs serves one S3 bucket (optionally a prefix inside it) as a FUSE
// filesystem through the go-fuse/v2 fs API, with the semantics users of s3fs
// and geesefs expect:
//
//   - Objects are files; "a/" markers and common prefixes are directories
//     (implicit directories need no marker).
//   - Writes are staged in a local file under Options.StagingDir and uploaded
//     on close (flush), fsync and release: PutObject for small files,
//     multipart upload above Options.MultipartThreshold. A new file written
//     sequentially is streamed: once it passes the threshold its full parts
//     upload in parallel while the application still writes, and close
//     only sends the tail (stream.go); rewrites fall back to a whole upload.
//   - Reads of objects are ranged GETs. A handle that reads sequentially
//     keeps up to 4 GETs of 8 MiB in flight ahead of the reader, from a
//     buffer pool bounded by Options.ReadAheadMemory; random reads fetch
//     just what the kernel asked for (readahead.go).
//   - Directory listings are kept complete for the stat cache TTL and
//     updated by changes made through the mount, so a second readdir and
//     lookups of names a listing lacks need no request (listcache.go).
//   - An open file stays readable after unlink (staged before the delete,
//     up to MultipartThreshold).
//   - Renames copy with CopyObject, or UploadPartCopy above 5 GiB.
//   - FS.RequestCounts reports the S3 requests sent, by operation.
//   - An upload that fails fails the close or fsync with an errno (EACCES for
//     403, ETIMEDOUT for timeouts, EIO otherwise) and keeps the staged data.
//     A later flush or fsync retries, a released dirty file is retried in the
//     background with backoff, and FS.FlushAll uploads whatever is left at
//     shutdown. Staged data that did not reach the bucket is never deleted
//     (unless the file itself is unlinked or overwritten by a rename).
//   - POSIX metadata (mode, owner, times) and extended attributes live in
//     the object's user metadata under the names s3fs gives them
//     (posixmeta.go, xattrs.go); chmod, chown, utimens and setxattr change
//     them with a server-side copy (attrs.go). Objects without metadata
//     show Options.UID/GID, Options.Umask modes and their LastModified.
//   - Symlinks, FIFOs, sockets and device nodes are objects whose mode says
//     so (a symlink's body is its target), as s3fs stores them; directory
//     markers and old-style application/x-directory objects follow s3fs
//     (dirattrs.go). Hard links are not supported (ENOTSUP).
//
// The S3 client is injected as the narrow API interface; it is expected to be
// configured already (endpoint, credentials that may be swapped live, retries).
// S3 errors become errnos in one place, Errno.
package s3fs
