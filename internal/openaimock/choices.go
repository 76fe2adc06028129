package openaimock

import "fmt"

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
