package openaimock

import (
	"encoding/json"
	"fmt"
)

// What Chat and legacy Completions share: the n and best_of counts, the
// envelope of their objects, and how a stream sends several choices.

// OpenAI's bounds on the choice counts: n on Chat and legacy Completions,
// best_of on legacy Completions only.
const (
	maxN      = 128
	maxBestOf = 20
)

// choiceCounts reads n, and best_of for legacy Completions (nil for chat),
// as OpenAI validates them: generated is how many completions the upstream
// makes and bills, returned how many it sends back. A missing or null field
// is the default of one; best_of defaults to n. msg is the 400's message
// when a value is out of bounds, or when a stream is asked of a best_of the
// client would not see every candidate of (the real API refuses that too:
// it cannot pick the best before the candidates are done).
func choiceCounts(n, bestOf *int, stream bool) (generated, returned int, msg string) {
	returned = 1
	if n != nil {
		returned = *n
		switch {
		case *n < 1:
			return 0, 0, fmt.Sprintf("Invalid 'n': integer below minimum value. Expected a value >= 1, but got %d instead.", *n)
		case *n > maxN:
			return 0, 0, fmt.Sprintf("Invalid 'n': integer above maximum value. Expected a value <= %d, but got %d instead.", maxN, *n)
		}
	}
	generated = returned
	if bestOf != nil {
		generated = *bestOf
		switch {
		case *bestOf > maxBestOf:
			return 0, 0, fmt.Sprintf("Invalid 'best_of': integer above maximum value. Expected a value <= %d, but got %d instead.", maxBestOf, *bestOf)
		case *bestOf < returned:
			return 0, 0, fmt.Sprintf("best_of must be greater than or equal to n (got best_of %d, n %d).", *bestOf, returned)
		case stream && *bestOf > returned:
			return 0, 0, "Cannot stream results with best_of greater than n."
		}
	}
	return generated, returned, ""
}

// choicesObject is the envelope Chat chunks and legacy Completions objects
// (answer and chunks alike) share on the wire, fields in OpenAI's order;
// only the choice differs. A buffered Chat answer orders its fields
// otherwise, so it keeps a type of its own.
type choicesObject[C any] struct {
	ID                string          `json:"id"`
	Object            string          `json:"object"`
	Created           int64           `json:"created"`
	Model             string          `json:"model"`
	SystemFingerprint string          `json:"system_fingerprint"`
	Choices           []C             `json:"choices"`
	Usage             json.RawMessage `json:"usage,omitempty"`
}

// choiceStream streams a Chat or legacy Completions answer: each event is
// the head with one choice, and the stream ends with the usage chunk when
// include_usage asks for it, then [DONE].
type choiceStream[C any] struct {
	out       *sse
	head      choicesObject[C]
	withUsage bool
}

// startChoices opens the stream. The usage chunk goes out only when the
// request asks for it and x-mock-ignore-include-usage does not drop it.
func startChoices[C any](w *wire, c call, opts *streamOptions, head choicesObject[C]) choiceStream[C] {
	return choiceStream[C]{out: startSSE(w, c), head: head, withUsage: opts.includeUsage() && !c.ignoreUsage}
}

// send writes one chunk of choice index; delta is the text it carries, for
// the trace. OpenAI marks "usage": null on every chunk but the last when
// include_usage is set.
func (s choiceStream[C]) send(index int, choice C, delta string) {
	ch := s.head
	ch.Choices = []C{choice}
	if s.withUsage {
		ch.Usage = nullJSON
	}
	s.out.dataAt(ch, index, delta)
}

// texts sends the choices' texts in turns, an event of each choice per
// turn, as OpenAI interleaves them; then each choice closes with its
// finish_reason. piece and finish make the API's choice of either event.
func (s choiceStream[C]) texts(gens []completion, piece func(index int, text string) C, finish func(index int, reason *string) C) {
	pieces := make([][]string, len(gens))
	turns := 0
	for i, gen := range gens {
		pieces[i] = gen.chunks(chunksPerEvent)
		turns = max(turns, len(pieces[i]))
	}
	for turn := range turns {
		for i := range gens {
			if turn < len(pieces[i]) {
				text := pieces[i][turn]
				s.send(i, piece(i, text), text)
			}
		}
	}
	for i, gen := range gens {
		s.send(i, finish(i, finishReason(gen)), "")
	}
}

// done sends the usage chunk, which has no choices, if asked for, and
// ends the stream.
func (s choiceStream[C]) done(u json.RawMessage) {
	if s.withUsage {
		last := s.head
		last.Choices, last.Usage = []C{}, u
		s.out.usageData(last)
	}
	s.out.done()
}
