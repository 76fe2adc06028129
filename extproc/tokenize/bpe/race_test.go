//go:build race

package bpe

// raceEnabled: under the race detector sync.Pool drops items on purpose.
const raceEnabled = true
