// Package decodetest makes compressed bodies for tests of what reads
// them.
package decodetest

import (
	"bytes"

	"github.com/klauspost/compress/zstd"
)

// Bomb is a zstd body of a few kilobytes that inflates to mib MiB of
// zeros: a compression bomb.
func Bomb(mib int) []byte {
	var b bytes.Buffer
	w, err := zstd.NewWriter(&b, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		panic(err) // options fixed here: not the caller's to handle
	}
	zeros := make([]byte, 1<<20)
	for range mib {
		w.Write(zeros)
	}
	w.Close()
	return b.Bytes()
}
