package envoy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestYAMLToJSON(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"int stays a number", "port_value: 10000", `{"port_value":10000}`},
		{"negative int", "n: -1", `{"n":-1}`},
		{"hex int becomes decimal", "n: 0x1F", `{"n":31}`},
		{"uint64 beyond int64", "n: 18446744073709551615", `{"n":18446744073709551615}`},
		{"float", "f: 0.5", `{"f":0.5}`},
		{"infinity", "f: .inf", `{"f":"Infinity"}`},
		{"NaN", "f: .nan", `{"f":"NaN"}`},
		{"duration stays a string", "timeout: 0.25s", `{"timeout":"0.25s"}`},
		{"quoted number stays a string", `port: "50051"`, `{"port":"50051"}`},
		{"bool", "b: true", `{"b":true}`},
		{"YAML 1.1 yes is a string", "b: yes", `{"b":"yes"}`},
		{"null", "a: ~\nb:", `{"a":null,"b":null}`},
		{"date stays a string", "d: 2024-01-02", `{"d":"2024-01-02"}`},
		{"escapes", `s: "a\"b\n<&>"`, `{"s":"a\"b\n\u003c\u0026\u003e"}`},
		{"non-string key", "1: a", `{"1":"a"}`},
		{"key order kept", "b: 1\na: 2", `{"b":1,"a":2}`},
		{"empty flow map", "grpc_health_check: {}", `{"grpc_health_check":{}}`},
		{"nested", "a: [1, two, {b: c}]", `{"a":[1,"two",{"b":"c"}]}`},
		{"alias", "x: &p {port: 1}\ny: *p", `{"x":{"port":1},"y":{"port":1}}`},
		{"merge key, explicit wins", "b: &b {a: 1, c: 2}\nm: {<<: *b, c: 3}", `{"b":{"a":1,"c":2},"m":{"c":3,"a":1}}`},
		{"merge list, first wins", "x: &x {a: 1}\ny: &y {a: 2, b: 2}\nm: {<<: [*x, *y]}", `{"x":{"a":1},"y":{"a":2,"b":2},"m":{"a":1,"b":2}}`},
		{"block scalar", "s: |\n  line one\n  line two\n", `{"s":"line one\nline two\n"}`},
		{"binary", "b: !!binary |\n  aGVs\n  bG8=\n", `{"b":"aGVsbG8="}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := yamlToJSON([]byte(tt.yaml))
			if err != nil {
				t.Fatalf("yamlToJSON(%q): %v", tt.yaml, err)
			}
			var compact bytes.Buffer
			if err := json.Compact(&compact, got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, got)
			}
			if compact.String() != tt.want {
				t.Errorf("yamlToJSON(%q): got %s, want %s", tt.yaml, compact.String(), tt.want)
			}
		})
	}
}

func TestYAMLToJSONErrors(t *testing.T) {
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"empty", "", "empty YAML document"},
		{"comment only", "# nothing\n", "empty YAML document"},
		{"duplicate key", "a: 1\nb: 2\na: 3", `line 3: key "a" already defined at line 1`},
		{"two documents", "a: 1\n---\nb: 2", "more than one YAML document"},
		{"custom tag", "a: !secret x", "unsupported YAML tag !secret"},
		{"non-scalar key", "? [a]\n: b", "mapping key must be a scalar"},
		{"merge of a scalar", "m: {<<: 1}", "merge key (<<) needs a mapping"},
		{"bad YAML", "a: [1, 2", "yaml:"},
		{"alias bomb", aliasBomb(), "expands to more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := yamlToJSON([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("yamlToJSON(%.40q): got %v, want error containing %q", tt.yaml, err, tt.wantErr)
			}
		})
	}
}

// TestYAMLToJSONKeepsLines checks that a value's JSON line is its YAML line,
// which is what lets protojson errors point into the YAML file.
func TestYAMLToJSONKeepsLines(t *testing.T) {
	src := "a: 1\n\n# comment\nb:\n  c: x\n  d: [1,\n    2]\n"
	got, err := yamlToJSON([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(got), "\n")
	for _, tc := range []struct {
		text string
		line int
	}{{`"a"`, 1}, {`"b"`, 4}, {`"c"`, 5}, {`"d"`, 6}, {"2", 7}} {
		if tc.line > len(lines) || !strings.Contains(lines[tc.line-1], tc.text) {
			t.Errorf("JSON line %d: want it to contain %s; JSON:\n%s", tc.line, tc.text, got)
		}
	}
}

// aliasBomb builds the classic exponential-alias document: ten levels of
// ten references each would expand to 10^10 nodes.
func aliasBomb() string {
	var sb strings.Builder
	sb.WriteString("l0: &l0 [x]\n")
	for i := 1; i <= 10; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", ")
		fmt.Fprintf(&sb, "l%d: &l%d [%s]\n", i, i, refs)
	}
	return sb.String()
}
