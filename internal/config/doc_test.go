package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// yamlPaths lists every field of t as dotted YAML paths.
func yamlPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeOf(Config{}).PkgPath() {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		out = append(out, prefix+name)
		out = append(out, yamlPaths(f.Type, prefix+name+".")...)
	}
	return out
}

// TestEveryFieldIsDocumented fails when a config field is missing from the
// README's configuration reference (its YAML example or its table).
func TestEveryFieldIsDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "## Configuration")
	if start < 0 {
		t.Fatal("README has no ## Configuration section")
	}
	section := text[start:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	paths := yamlPaths(reflect.TypeOf(Config{}), "")
	if len(paths) < 40 {
		t.Fatalf("found only %d fields: the walk is broken", len(paths))
	}
	for _, p := range paths {
		leaf := p[strings.LastIndexByte(p, '.')+1:]
		// As a YAML key ("leaf:") in the example, or named in the table.
		re := regexp.MustCompile(`(^|[\s{,])` + regexp.QuoteMeta(leaf) + `:|` + "`" + `[^` + "`" + `]*\b` + regexp.QuoteMeta(leaf) + "`")
		if !re.MatchString(section) {
			t.Errorf("config field %s is not documented in README's ## Configuration", p)
		}
	}
}
