package agent

import (
	"sync"

	"google.golang.org/grpc/encoding"
	encproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// A session's bulk output goes out without a copy of its own: the FIFO is
// read into a pooled buffer, and that buffer, behind the few bytes of a
// SessionResponse's tag and length, is what gRPC frames and writes. gRPC
// writes a message after SendMsg returns, so the buffer is reference
// counted (mem.NewBuffer) and comes back to the pool when gRPC frees it,
// not when Send returns. The bytes on the wire are exactly the proto
// encoding of SessionResponse{stdout|stderr: data}: clients decode it with
// any proto library.

// outputChunk is a SessionResponse whose stdout (or stderr) is *buf;
// sessionCodec encodes it. buf is the codec's from then on.
type outputChunk struct {
	stderr bool
	buf    *[]byte
}

// Field numbers of SessionResponse's output frames.
var (
	stdoutField = protowire.Number((&agentv1.SessionResponse{}).ProtoReflect().Descriptor().Fields().ByName("stdout").Number())
	stderrField = protowire.Number((&agentv1.SessionResponse{}).ProtoReflect().Descriptor().Fields().ByName("stderr").Number())
)

// sessionCodec is gRPC's proto codec, except that an outputChunk is sent
// as its tag, its length and its buffer, uncopied.
type sessionCodec struct{}

var agentProtoCodec = encoding.GetCodecV2(encproto.Name)

func (sessionCodec) Name() string { return encproto.Name }

func (sessionCodec) Marshal(v any) (mem.BufferSlice, error) {
	c, ok := v.(outputChunk)
	if !ok {
		return agentProtoCodec.Marshal(v)
	}
	field := stdoutField
	if c.stderr {
		field = stderrField
	}
	hdr := protowire.AppendTag(make([]byte, 0, 16), field, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(*c.buf)))
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.NewBuffer(c.buf, outputBufs)}, nil
}

func (sessionCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return agentProtoCodec.Unmarshal(data, v)
}

// readBuf is the size of one read of a session's output, and so of its
// largest frame.
const readBuf = 256 << 10

// outputPool is a mem.BufferPool of readBuf-sized buffers.
type outputPool struct{ p sync.Pool }

var outputBufs = &outputPool{p: sync.Pool{New: func() any { b := make([]byte, readBuf); return &b }}}

// Get returns a buffer of readBuf bytes (length is ignored: every buffer
// of this pool is one read's).
func (o *outputPool) Get(int) *[]byte {
	bp := o.p.Get().(*[]byte)
	*bp = (*bp)[:readBuf]
	return bp
}

func (o *outputPool) Put(bp *[]byte) {
	if cap(*bp) < readBuf {
		return
	}
	o.p.Put(bp)
}
