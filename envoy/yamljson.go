package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds how many nodes one document may expand to. Aliases are
// expanded in place, so without a bound a few lines of nested anchors (a
// "billion laughs" file) would exhaust memory.
const maxNodes = 1 << 20

// yamlToJSON converts one YAML document to JSON that protojson accepts.
//
// It walks the YAML node tree instead of decoding into map[string]any so
// that each scalar keeps the type YAML resolved for it and object keys keep
// their order: a plain 10000 stays a JSON number, a quoted "10000" stays a
// string (protojson takes either for an integer field but only a string
// for a string field), and a duration such as 0.25s stays the string
// protojson parses for google.protobuf.Duration. Duplicate keys are an
// error, because a silently overridden first value is exactly the kind of
// typo this package exists to catch.
func yamlToJSON(data []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty YAML document")
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: more than one YAML document; an Envoy bootstrap is a single document", extra.Line)
	}
	c := converter{line: 1}
	if err := c.node(&doc); err != nil {
		return nil, err
	}
	return c.buf.Bytes(), nil
}

type converter struct {
	buf   bytes.Buffer
	nodes int
	line  int // line of the JSON written so far, from 1
}

// seek pads the JSON with newlines up to the YAML line of the value about
// to be written, so the "(line N:…)" in a protojson error points at the
// offending line of the YAML file. Values that appear again through an
// alias or a merge key sit on earlier lines and are written where they are.
func (c *converter) seek(line int) {
	for c.line < line {
		c.buf.WriteByte('\n')
		c.line++
	}
}

func (c *converter) node(n *yaml.Node) error {
	c.nodes++
	if c.nodes > maxNodes {
		return fmt.Errorf("line %d: document expands to more than %d nodes", n.Line, maxNodes)
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return errors.New("empty YAML document")
		}
		return c.node(n.Content[0])
	case yaml.AliasNode:
		return c.node(n.Alias)
	case yaml.SequenceNode:
		c.seek(n.Line)
		c.buf.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				c.buf.WriteByte(',')
			}
			if err := c.node(item); err != nil {
				return err
			}
		}
		c.buf.WriteByte(']')
		return nil
	case yaml.MappingNode:
		c.seek(n.Line)
		return c.mapping(n)
	case yaml.ScalarNode:
		c.seek(n.Line)
		return c.scalar(n)
	}
	return fmt.Errorf("line %d: unsupported YAML node kind %d", n.Line, n.Kind)
}

type entry struct {
	key   string
	line  int
	value *yaml.Node
}

func (c *converter) mapping(n *yaml.Node) error {
	entries, err := c.entries(n)
	if err != nil {
		return err
	}
	c.buf.WriteByte('{')
	for i, e := range entries {
		if i > 0 {
			c.buf.WriteByte(',')
		}
		c.seek(e.line)
		writeString(&c.buf, e.key)
		c.buf.WriteByte(':')
		if err := c.node(e.value); err != nil {
			return err
		}
	}
	c.buf.WriteByte('}')
	return nil
}

// entries lists a mapping's keys with merge keys (<<) applied. Keys written
// in the mapping itself win over merged ones, and earlier merge sources win
// over later ones, as the YAML merge-key spec says; only a key written
// twice in the same mapping is an error.
func (c *converter) entries(n *yaml.Node) ([]entry, error) {
	var out []entry
	seen := map[string]int{} // key → line where it was first defined
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: mapping key must be a scalar", k.Line)
		}
		if k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if line, dup := seen[k.Value]; dup {
			return nil, fmt.Errorf("line %d: key %q already defined at line %d", k.Line, k.Value, line)
		}
		seen[k.Value] = k.Line
		out = append(out, entry{k.Value, k.Line, v})
	}
	for _, m := range merges {
		sources := []*yaml.Node{resolve(m)}
		if sources[0].Kind == yaml.SequenceNode {
			sources = sources[0].Content
		}
		for _, src := range sources {
			src = resolve(src)
			c.nodes++
			if src.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("line %d: merge key (<<) needs a mapping or a list of mappings", src.Line)
			}
			if c.nodes > maxNodes {
				return nil, fmt.Errorf("line %d: document expands to more than %d nodes", src.Line, maxNodes)
			}
			merged, err := c.entries(src)
			if err != nil {
				return nil, err
			}
			for _, e := range merged {
				if _, dup := seen[e.key]; !dup {
					seen[e.key] = src.Line
					out = append(out, e)
				}
			}
		}
	}
	return out, nil
}

// scalar writes one scalar with the JSON type matching its resolved YAML tag.
func (c *converter) scalar(n *yaml.Node) error {
	switch tag := n.ShortTag(); tag {
	case "!!str", "!!timestamp":
		// A timestamp is only ever a string to protobuf (e.g. a
		// google.protobuf.Timestamp in RFC 3339); keep the text as written.
		writeString(&c.buf, n.Value)
	case "!!binary":
		// protojson wants bytes as one base64 string; YAML allows it folded
		// over several lines.
		writeString(&c.buf, strings.Join(strings.Fields(n.Value), ""))
	case "!!null":
		c.buf.WriteString("null")
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		c.buf.WriteString(strconv.FormatBool(b))
	case "!!int":
		// Decoded rather than copied, so YAML spellings such as 0x1F, 0o17
		// or +5 reach protojson as plain decimal it understands.
		var i int64
		if err := n.Decode(&i); err == nil {
			c.buf.WriteString(strconv.FormatInt(i, 10))
			return nil
		}
		var u uint64
		if err := n.Decode(&u); err != nil {
			return fmt.Errorf("line %d: integer %s out of range", n.Line, n.Value)
		}
		c.buf.WriteString(strconv.FormatUint(u, 10))
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		switch {
		case math.IsNaN(f):
			c.buf.WriteString(`"NaN"`) // protojson's spelling; JSON has none
		case math.IsInf(f, 1):
			c.buf.WriteString(`"Infinity"`)
		case math.IsInf(f, -1):
			c.buf.WriteString(`"-Infinity"`)
		default:
			c.buf.WriteString(strconv.FormatFloat(f, 'g', -1, 64))
		}
	default:
		return fmt.Errorf("line %d: unsupported YAML tag %s", n.Line, tag)
	}
	return nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

func writeString(buf *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // a Go string always marshals
	buf.Write(enc)
}
