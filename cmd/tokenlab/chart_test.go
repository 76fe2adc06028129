package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChartFormats draws every status class in both formats: the PNG must
// decode at its fixed size, the SVG must be well-formed XML showing the
// statuses of refused runs and the limit.
func TestChartFormats(t *testing.T) {
	results := []result{
		{Run: 1, Status: 200, Total: 94},
		{Run: 2, Status: 200, Total: 120},
		{Run: 3, Status: 429},
		{Run: 4, Status: 403},
		{Run: 5, Status: 503},
		{Run: 6, Status: 0},
	}
	dir := t.TempDir()
	tests := []struct {
		file  string
		limit int
	}{
		{"lab.png", 500},
		{"lab.svg", 500},
		{"nolimit.SVG", 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			if err := writeChart(path, "test", results, tt.limit); err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(tt.file, ".png") {
				checkPNG(t, path)
				return
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkXML(t, string(data))
			for _, want := range []string{"429", "403", "503", "error", "accumulated tokens", "2xx answered", "5xx upstream error"} {
				if !strings.Contains(string(data), want) {
					t.Errorf("the SVG lacks %q", want)
				}
			}
			if hasLimit := strings.Contains(string(data), "limit: 500 tokens/min"); hasLimit != (tt.limit > 0) {
				t.Errorf("limit in legend: %v, want %v", hasLimit, tt.limit > 0)
			}
		})
	}
	if err := writeChart(filepath.Join(dir, "lab.gif"), "test", results, 0); err == nil {
		t.Error("a .gif chart was written")
	}
}

func checkXML(t *testing.T, doc string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("SVG: %v", err)
		}
	}
}

func TestClassOf(t *testing.T) {
	tests := []struct {
		status int
		want   statusClass
	}{
		{200, class2xx}, {201, class2xx}, {429, class429}, {403, class403}, {500, class5xx}, {503, class5xx},
		{401, classOther}, {0, classOther},
	}
	for _, tt := range tests {
		if got := classOf(tt.status); got != tt.want {
			t.Errorf("classOf(%d) = %v, want %v", tt.status, got, tt.want)
		}
	}
}

// TestChartTitle: the chart says which API the lab drove, and its limit
// goes on a line of its own where one line would not fit the chart.
func TestChartTitle(t *testing.T) {
	tests := []struct {
		api, model string
		stream     bool
		limit      int
		want       string
	}{
		{"openai", "gpt-4o", false, 500, "tokenlab: 10 OpenAI chat completions (gpt-4o), 500 tokens/min policy"},
		{"anthropic", "claude-sonnet-4-5", true, 500, "tokenlab: 10 Anthropic Messages calls (claude-sonnet-4-5, streamed), 500 tokens/min policy"},
		{"gemini", "gemini-2.5-flash", false, 0, "tokenlab: 10 Gemini generateContent calls (gemini-2.5-flash)"},
		{"bedrock", "anthropic.claude-sonnet-4-5-v1:0", true, 500, "tokenlab: 10 Bedrock Converse calls (anthropic.claude-sonnet-4-5-v1:0, streamed), 500 tokens/min policy"},
		{"bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", true, 500, "tokenlab: 10 Bedrock Converse calls (us.anthropic.claude-sonnet-4-5-20250929-v1:0, streamed)\n500 tokens/min policy"},
	}
	for _, tt := range tests {
		o := options{api: lookupAPI(tt.api), model: tt.model, stream: tt.stream, n: 10}
		if got := chartTitle(o, tt.limit); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.api, got, tt.want)
		}
	}
}
