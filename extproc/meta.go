package extproc

import (
	"math"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// meta is the dynamic metadata Envoy's access log can print, in the
// tokengate namespace: a google.protobuf.Struct written straight in
// protobuf's wire format and attached to the reply as its
// dynamic_metadata field. Built from structpb's Go maps, the same Struct
// cost more to marshal than all the rest of a counted request's replies;
// on the wire the bytes are the same, and Envoy reads them as it would.
type meta struct {
	entries []byte // the namespace's Struct: its fields entries, encoded
}

// Field numbers, read from the descriptors rather than written down.
var (
	dynamicMetadataField = fieldNumber((&extprocv3.ProcessingResponse{}).ProtoReflect().Descriptor(), "dynamic_metadata")
	structFieldsField    = fieldNumber((&structpb.Struct{}).ProtoReflect().Descriptor(), "fields")
	valueNumberField     = fieldNumber((&structpb.Value{}).ProtoReflect().Descriptor(), "number_value")
	valueStringField     = fieldNumber((&structpb.Value{}).ProtoReflect().Descriptor(), "string_value")
	valueStructField     = fieldNumber((&structpb.Value{}).ProtoReflect().Descriptor(), "struct_value")
)

// A map entry is a message of key (1) and value (2), per the protobuf spec.
const (
	mapKeyField   protowire.Number = 1
	mapValueField protowire.Number = 2
)

func fieldNumber(md protoreflect.MessageDescriptor, name protoreflect.Name) protowire.Number {
	return md.Fields().ByName(name).Number()
}

func newMeta(decision string) *meta {
	m := &meta{entries: make([]byte, 0, 160)}
	return m.str("decision", decision)
}

func (m *meta) num(k string, v int64) *meta {
	var buf [16]byte
	value := protowire.AppendTag(buf[:0], valueNumberField, protowire.Fixed64Type)
	value = protowire.AppendFixed64(value, math.Float64bits(float64(v)))
	m.entries = appendEntry(m.entries, k, value)
	return m
}

func (m *meta) str(k, v string) *meta {
	var buf [64]byte
	value := protowire.AppendTag(buf[:0], valueStringField, protowire.BytesType)
	value = protowire.AppendString(value, v)
	m.entries = appendEntry(m.entries, k, value)
	return m
}

// appendEntry appends one entry of a Struct's fields map: key, and the
// encoded google.protobuf.Value.
func appendEntry(b []byte, key string, value []byte) []byte {
	b = protowire.AppendTag(b, structFieldsField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entrySize(len(key), len(value))))
	b = protowire.AppendTag(b, mapKeyField, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, mapValueField, protowire.BytesType)
	return protowire.AppendBytes(b, value)
}

func entrySize(key, value int) int {
	return protowire.SizeTag(mapKeyField) + protowire.SizeBytes(key) + protowire.SizeTag(mapValueField) + protowire.SizeBytes(value)
}

// attach sets resp's dynamic_metadata to {tokengate: {entries}}; a nil
// meta attaches nothing. The field goes in as bytes the message does not
// parse itself, which Marshal writes out as they are.
func (m *meta) attach(resp *extprocv3.ProcessingResponse) {
	if m == nil {
		return
	}
	valueLen := protowire.SizeTag(valueStructField) + protowire.SizeBytes(len(m.entries))
	entryLen := entrySize(len(Namespace), valueLen)
	outerLen := protowire.SizeTag(structFieldsField) + protowire.SizeBytes(entryLen)
	b := make([]byte, 0, protowire.SizeTag(dynamicMetadataField)+protowire.SizeBytes(outerLen))
	b = protowire.AppendTag(b, dynamicMetadataField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(outerLen))
	b = protowire.AppendTag(b, structFieldsField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entryLen))
	b = protowire.AppendTag(b, mapKeyField, protowire.BytesType)
	b = protowire.AppendString(b, Namespace)
	b = protowire.AppendTag(b, mapValueField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(valueLen))
	b = protowire.AppendTag(b, valueStructField, protowire.BytesType)
	b = protowire.AppendBytes(b, m.entries)
	msg := resp.ProtoReflect()
	msg.SetUnknown(append(msg.GetUnknown(), b...))
}
