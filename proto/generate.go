// Package proto holds tokengate's own gRPC API. The generated Go is
// committed; `go generate ./proto/...` regenerates it with protoc (Debian's
// protobuf-compiler) and the plugin versions pinned in gen.sh.
package proto

//go:generate sh gen.sh
