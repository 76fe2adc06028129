package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

const adminUsage = `usage: tokengate admin usage|list|reset [flags]
  usage  --key K | --key-sha256 H [--policy P] [--model M]   a key's budgets
  list   [--policy P] [--limit N]                            the keys that used most
  reset  --key K | --key-sha256 H [--policy P] [--model M]   forget a key's usage
flags common to all: --addr (admin listener, default 127.0.0.1:9090), --token-env (default TOKENGATE_ADMIN_TOKEN)`

// runAdmin is the admin API's client. It prints one JSON document per
// call; key values given with --key are sent for hashing by the server and
// never printed.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError(errors.New(adminUsage))
	}
	cmd := args[0]
	fs := flag.NewFlagSet("tokengate admin "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9090", "admin listener address")
	tokenEnv := fs.String("token-env", "TOKENGATE_ADMIN_TOKEN", "environment variable holding the admin bearer token")
	raw := fs.String("key", "", "the subscription key's value (hashed by the server)")
	hash := fs.String("key-sha256", "", "the subscription key's SHA-256, in hex")
	policy := fs.String("policy", "", "one policy (default: all)")
	model := fs.String("model", "", "the model, for per_model policies")
	limit := fs.Int("limit", 20, "list: how many keys")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err)
	}
	key := &adminv1.Key{}
	switch {
	case *raw != "" && *hash != "":
		return usageError(errors.New("--key and --key-sha256 exclude each other"))
	case *raw != "":
		key.Key = &adminv1.Key_Raw{Raw: *raw}
	case *hash != "":
		key.Key = &adminv1.Key_Sha256{Sha256: *hash}
	}

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if tok := os.Getenv(*tokenEnv); tok != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	c := adminv1.NewAdminServiceClient(conn)
	var resp proto.Message
	switch cmd {
	case "usage":
		resp, err = c.GetUsage(ctx, &adminv1.GetUsageRequest{Key: key, Policy: *policy, Model: *model})
	case "list":
		resp, err = c.ListUsage(ctx, &adminv1.ListUsageRequest{Policy: *policy, Limit: int32(*limit)})
	case "reset":
		resp, err = c.ResetUsage(ctx, &adminv1.ResetUsageRequest{Key: key, Policy: *policy, Model: *model})
	default:
		return usageError(fmt.Errorf("unknown admin command %q\n%s", cmd, adminUsage))
	}
	if err != nil {
		return fmt.Errorf("admin %s: %w", cmd, err)
	}
	out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(out))
	return err
}
