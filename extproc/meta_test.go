package extproc

import (
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The metadata written in wire format must read back as the Struct that
// structpb would have built, whatever the sizes of its parts.
func TestMetaReadsAsStruct(t *testing.T) {
	long := strings.Repeat("é", 200) // lengths past one varint byte
	m := newMeta("allowed").num("prompt_tokens", 212).num("zero", 0).num("negative", -5).
		num("big", 1<<40).str("source", "reported").str("long", long)
	resp := continueResponseBody(nil)
	m.attach(resp)
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	got := &extprocv3.ProcessingResponse{}
	if err := proto.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	inner, err := structpb.NewStruct(map[string]any{
		"decision": "allowed", "prompt_tokens": 212, "zero": 0, "negative": -5,
		"big": float64(1 << 40), "source": "reported", "long": long,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := continueResponseBody(nil)
	want.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{Namespace: structpb.NewStructValue(inner)}}
	if !proto.Equal(got, want) {
		t.Errorf("metadata read back as\n%v\nwant\n%v", got, want)
	}
	if len(got.ProtoReflect().GetUnknown()) != 0 {
		t.Error("metadata left unknown fields after parsing")
	}

	var none *meta
	plain := continueResponseBody(nil)
	none.attach(plain)
	if b, _ := proto.Marshal(plain); len(b) != proto.Size(continueResponseBody(nil)) {
		t.Error("a nil meta changed the reply")
	}
}
