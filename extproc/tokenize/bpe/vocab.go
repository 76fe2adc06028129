package bpe

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/bits"

	"github.com/pkoukk/tiktoken-go-loader/assets"
)

// vocab maps token bytes to ranks with an open-addressing table. A slot
// holds a token of up to 8 bytes itself, so looking one up reads one slot
// and nothing else; longer tokens keep their hash there and are compared
// with the arena, all their bytes back to back. A lookup allocates
// nothing.
type vocab struct {
	arena  string   // every token's bytes, back to back, in rank order
	off    []uint32 // token r is arena[off[r]:off[r+1]]
	slots  []slot
	mask   uint64
	maxLen int // the longest token, in bytes
}

type slot struct {
	key  uint64 // up to 8 bytes: the bytes, little-endian; longer: the hash
	rank uint32 // rank+1; 0 marks an empty slot
	n    uint32 // the token's length
}

// loadVocab reads name's rank file from the offline loader's embedded
// assets (github.com/pkoukk/tiktoken-go-loader): lines of "base64 rank",
// ranks 0, 1, 2, ... in order.
func loadVocab(name string) (*vocab, error) {
	data, err := assets.Assets.ReadFile(name + ".tiktoken")
	if err != nil {
		return nil, fmt.Errorf("bpe: vocabulary %s: %w", name, err)
	}
	nlines := bytes.Count(data, []byte{'\n'}) + 1
	arena := make([]byte, 0, len(data)*3/4)
	off := make([]uint32, 1, nlines+1)
	for line := 1; len(data) > 0; line++ {
		var l []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			l, data = data[:i], data[i+1:]
		} else {
			l, data = data, nil
		}
		if len(l) == 0 {
			continue
		}
		sp := bytes.IndexByte(l, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("bpe: vocabulary %s line %d: no rank", name, line)
		}
		rank, ok := atoi(l[sp+1:])
		if !ok || rank != len(off)-1 {
			return nil, fmt.Errorf("bpe: vocabulary %s line %d: rank %q, want %d (ranks must be dense and in order)", name, line, l[sp+1:], len(off)-1)
		}
		n := len(arena)
		arena = arena[:n+base64.StdEncoding.DecodedLen(sp)]
		m, err := base64.StdEncoding.Decode(arena[n:], l[:sp])
		if err != nil {
			return nil, fmt.Errorf("bpe: vocabulary %s line %d: %w", name, line, err)
		}
		arena = arena[:n+m]
		off = append(off, uint32(len(arena)))
	}
	return newVocab(string(arena), off)
}

func newVocab(arena string, off []uint32) (*vocab, error) {
	ntok := len(off) - 1
	size := 1 << bits.Len(uint(ntok*slotsPerToken))
	v := &vocab{arena: arena, off: off, slots: make([]slot, size), mask: uint64(size - 1)}
	for r := range ntok {
		tok := arena[off[r]:off[r+1]]
		if _, dup := v.rank(tok); dup {
			return nil, fmt.Errorf("bpe: token %q appears twice", tok)
		}
		v.maxLen = max(v.maxLen, len(tok))
		key, h := keyHash(tok)
		i := h & v.mask
		for v.slots[i].rank != 0 {
			i = (i + 1) & v.mask
		}
		v.slots[i] = slot{key: key, rank: uint32(r + 1), n: uint32(len(tok))}
	}
	for b := range 256 { // byte-level BPE starts from single bytes
		if _, ok := v.rank(string([]byte{byte(b)})); !ok {
			return nil, fmt.Errorf("bpe: byte %#x has no token", b)
		}
	}
	return v, nil
}

// slotsPerToken sets the table's load factor: at most 1/slotsPerToken.
const slotsPerToken = 2

// rank returns the rank of the token whose bytes are b.
func (v *vocab) rank(b string) (uint32, bool) {
	key, h := keyHash(b)
	n := uint32(len(b))
	for i := h & v.mask; ; i = (i + 1) & v.mask {
		sl := &v.slots[i]
		if sl.rank == 0 {
			return 0, false
		}
		if sl.key == key && sl.n == n && (n <= 8 || v.arena[v.off[sl.rank-1]:v.off[sl.rank]] == b) {
			return sl.rank - 1, true
		}
	}
}

// keyHash returns b's slot key (its bytes if there are at most 8, its
// hash if more) and its hash: wyhash-style, overlapping loads mixed by a
// 128-bit multiply. The table is fixed, so no seed is needed.
func keyHash(s string) (key, h uint64) {
	const (
		k0 = 0xa0761d6478bd642f
		k1 = 0xe7037ed1a0b428db
		k2 = 0x8ebc6af09c88c6e3
	)
	n := len(s)
	switch {
	case n > 8:
	case n >= 4:
		key = uint64(load32(s)) | uint64(load32(s[n-4:]))<<(8*(n-4))
		return key, mix(key^k1, k2^uint64(n))
	case n > 0:
		key = uint64(s[0]) | uint64(s[n>>1])<<(8*(n>>1)) | uint64(s[n-1])<<(8*(n-1))
		return key, mix(key^k1, k2^uint64(n))
	default:
		return 0, mix(k1, k2)
	}
	seed, a := uint64(n)*k2, load64(s)
	if n > 16 {
		for t := s; len(t) > 16; t = t[16:] {
			seed = mix(load64(t)^k1, load64(t[8:])^seed)
		}
		a = load64(s[n-16:])
	}
	h = mix(a^k1^seed, load64(s[n-8:])^k0) ^ seed // the last 16 bytes or all, overlapping
	return h, h
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func load64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

func load32(s string) uint32 {
	_ = s[3]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

func atoi(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
