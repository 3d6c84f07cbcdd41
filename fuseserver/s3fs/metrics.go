package s3fs

import "sync/atomic"

// S3 operations counted by FS.RequestCounts.
const (
	opHead = iota
	opList
	opGet
	opPut
	opDelete
	opCopy
	opCreateMultipart
	opUploadPart
	opUploadPartCopy
	opCompleteMultipart
	opAbortMultipart
	numOps
)

var opNames = [numOps]string{
	opHead: "HeadObject", opList: "ListObjectsV2", opGet: "GetObject", opPut: "PutObject",
	opDelete: "DeleteObject", opCopy: "CopyObject", opCreateMultipart: "CreateMultipartUpload",
	opUploadPart: "UploadPart", opUploadPartCopy: "UploadPartCopy",
	opCompleteMultipart: "CompleteMultipartUpload", opAbortMultipart: "AbortMultipartUpload",
}

// requestCounters counts the S3 requests the filesystem sent, by operation
// (retries inside the client count once).
type requestCounters [numOps]atomic.Uint64

func (f *FS) count(op int) { f.requests[op].Add(1) }

// RequestCounts returns how many S3 requests of each operation the
// filesystem has sent since New, by S3 operation name, so that request
// amplification (an indexer walking the mount, say) shows in metrics.
func (f *FS) RequestCounts() map[string]uint64 {
	out := make(map[string]uint64, numOps)
	for op := range numOps {
		out[opNames[op]] = f.requests[op].Load()
	}
	return out
}
