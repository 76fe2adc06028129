package tokenize

import (
	"testing"

	"github.com/pkoukk/tiktoken-go"
	tiktokenloader "github.com/pkoukk/tiktoken-go-loader"
)

func TestEncodingFor(t *testing.T) {
	for i, tt := range []struct{ model, want string }{
		{"gpt-4o", O200kBase}, {"GPT-4o-mini", O200kBase}, {"openai/gpt-5", O200kBase}, {"o3-mini", O200kBase},
		{"gpt-4", Cl100kBase}, {"gpt-4-turbo", Cl100kBase}, {"azure/gpt-35-turbo", Cl100kBase},
		{"text-embedding-3-small", Cl100kBase}, {"some-new-model", O200kBase}, {"", O200kBase},
	} {
		if got := EncodingFor(tt.model); got != tt.want {
			t.Errorf("step %d: EncodingFor(%q) = %q, want %q", i, tt.model, got, tt.want)
		}
	}
}

// TestTextMatchesReference: Text counts what pkoukk/tiktoken-go's
// EncodeOrdinary does (package bpe holds the thorough comparison).
func TestTextMatchesReference(t *testing.T) {
	tiktoken.SetBpeLoader(tiktokenloader.NewOfflineLoader()) // never download
	texts := []string{
		"hello world", "Can you tell me the time, please?", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>",
		"It's 12345 o'clock   \r\n\tÜber naïve café 日本語 😀👩‍💻 \xff\xfe", "   ",
	}
	for i, model := range []string{"gpt-4o", "gpt-4"} {
		ref, err := tiktoken.GetEncoding(EncodingFor(model))
		if err != nil {
			t.Fatal(err)
		}
		for j, s := range texts {
			if got, want := Text(model, s), len(ref.EncodeOrdinary(s)); got != want {
				t.Errorf("step %d.%d: Text(%q, %q) = %d, want %d", i, j, model, s, got, want)
			}
		}
	}
}

func TestTextAndChat(t *testing.T) {
	if n := Text("gpt-4o", ""); n != 0 {
		t.Errorf("Text(empty) = %d, want 0", n)
	}
	if n := Text("gpt-4o", "<|endoftext|>"); n <= 1 {
		t.Errorf("Text(<|endoftext|>) = %d, want it counted as ordinary text (more than 1)", n)
	}
	msgs := []Message{{Role: "system", Content: "be brief"}, {Role: "user", Name: "ann", Content: "hello world"}}
	want := replyPriming + 2*tokensPerMessage + tokensPerName +
		Text("gpt-4o", "system") + Text("gpt-4o", "be brief") + Text("gpt-4o", "user") + Text("gpt-4o", "hello world") + Text("gpt-4o", "ann")
	if got := Chat("gpt-4o", msgs); got != want {
		t.Errorf("Chat = %d, want %d", got, want)
	}
	if got := Chat("gpt-4o", nil); got != replyPriming {
		t.Errorf("Chat(nil) = %d, want %d", got, replyPriming)
	}
}

func TestPreload(t *testing.T) {
	if err := Preload(O200kBase, Cl100kBase); err != nil {
		t.Fatalf("Preload: %v", err)
	}
	if err := Preload("r50k_base"); err == nil {
		t.Fatal("Preload(r50k_base): no error")
	}
}
