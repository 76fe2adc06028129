package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	t.Setenv("TOKENLAB_KEY", "")
	tests := []struct {
		args []string
		want string // in stderr; "" for no error
	}{
		{nil, "Usage:"},
		{[]string{"fly"}, `unknown command "fly"`},
		{[]string{"run"}, "--url: \"\" is not an http(s) URL"},
		{[]string{"run", "--url", "localhost:10000", "--key", "k"}, `--url: "localhost:10000" is not an http(s) URL`},
		{[]string{"run", "--url", "http://h", "--key", "k", "--out", "x.jpg"}, `--out: "x.jpg": the chart is written as .png or .svg`},
		{[]string{"run", "--url", "http://h", "--key", "k", "-n", "0", "--concurrency", "0"}, "-n: 0, want at least 1\n--concurrency: 0, want at least 1"},
		{[]string{"sdk", "--url", "http://h"}, "--key: missing (or set TOKENLAB_KEY)"},
		{[]string{"sdk", "--url", "http://h", "--key", "k", "--max-retries", "-1"}, "--max-retries: -1 is negative"},
		{[]string{"run", "--url", "http://h", "--key", "k", "--max-retries", "1"}, "flag provided but not defined: -max-retries"},
		{[]string{"local", "--tokens-per-minute", "0"}, "--tokens-per-minute: 0, want at least 1"},
		{[]string{"local", "extra"}, `unexpected arguments: ["extra"]`},
		{[]string{"run", "--url", "http://h", "--key", "k", "--api", "cohere"}, `--api: "cohere": want openai, anthropic, gemini or bedrock`},
		{[]string{"local", "--sdk", "--api", "gemini"}, "--sdk: the SDK lab drives the OpenAI API only, not --api gemini"},
		{[]string{"sdk", "--url", "http://h", "--key", "k", "--api", "anthropic"}, "flag provided but not defined: -api"},
		{[]string{"run", "--url", "http://h", "--key", "k", "--key-header", "", "--model", ""}, "--key-header: empty\n--model: empty"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			if !errors.Is(err, errUsage) {
				t.Fatalf("error %v, want a usage error", err)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr %q lacks %q", &stderr, tt.want)
			}
		})
	}
}

func TestFlagsDefaults(t *testing.T) {
	t.Setenv("TOKENLAB_KEY", "from-env")
	tests := []struct {
		command string
		args    []string
		check   func(options) bool
		want    string
	}{
		{"run", []string{"--url", "http://h"}, func(o options) bool { return o.key == "from-env" }, "key from TOKENLAB_KEY"},
		{"run", []string{"--url", "http://h", "-n", "3", "--concurrency", "8"}, func(o options) bool { return o.concurrency == 3 }, "concurrency capped at -n"},
		{"run", []string{"--url", "http://h"}, func(o options) bool {
			return o.n == 10 && o.model == "gpt-4o" && o.concurrency == 1 && o.out == "" && o.keyHeader == "api-key"
		}, "the lab's defaults, no chart"},
		{"local", nil, func(o options) bool {
			return o.out == "lab-result.png" && o.tokensPerMinute == 500 && o.maxRetries == 2
		}, "local writes lab-result.png"},
		{"local", nil, func(o options) bool {
			return o.api.name == "openai" && o.keyHeader == "api-key" && !o.keyHeaderSet
		}, "local drives OpenAI, its key in api-key"},
		{"sdk", []string{"--url", "http://h"}, func(o options) bool {
			return o.api.name == "openai" && o.model == "gpt-4o" && o.keyHeader == "api-key"
		}, "sdk drives OpenAI"},
		{"run", []string{"--url", "http://h", "--api", "anthropic"}, func(o options) bool {
			return o.model == "claude-sonnet-4-5" && o.keyHeader == "x-api-key"
		}, "anthropic: its model and key header"},
		{"run", []string{"--url", "http://h", "--api", "gemini", "--model", "gemini-2.5-pro"}, func(o options) bool {
			return o.model == "gemini-2.5-pro" && o.keyHeader == "x-goog-api-key"
		}, "gemini: --model wins"},
		{"local", []string{"--api", "bedrock"}, func(o options) bool {
			return o.model == "amazon.nova-pro-v1:0" && o.keyHeader == "authorization" && !o.keyHeaderSet
		}, "bedrock: its model, the SigV4 authorization"},
		{"local", []string{"--api", "bedrock", "--key-header", "x-tenant"}, func(o options) bool {
			return o.keyHeader == "x-tenant" && o.keyHeaderSet
		}, "--key-header wins"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if o := mustOptions(t, tt.command, tt.args...); !tt.check(o) {
				t.Errorf("%s %q: %+v", tt.command, tt.args, o)
			}
		})
	}
}

func TestAPIBase(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://localhost:10000", "http://localhost:10000/v1"},
		{"http://localhost:10000/", "http://localhost:10000/v1"},
		{"http://localhost:10000/v1", "http://localhost:10000/v1"},
		{"https://gw.example/openai/v1/", "https://gw.example/openai/v1"},
		{"https://gw.example/team-a", "https://gw.example/team-a/v1"},
	}
	for _, tt := range tests {
		if got := apiBase(tt.in); got != tt.want {
			t.Errorf("apiBase(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
