package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tokengate/tokengate/internal/config"
	adminv1 "github.com/tokengate/tokengate/proto/tokengate/admin/v1"
)

const adminUsage = `usage: tokengate admin usage|list|reset [flags]
  usage  --key K | --key-sha256 H [--policy P] [--model M]   a key's budgets
  list   [--policy P] [--limit N]                            the keys that used most
  reset  --key K | --key-sha256 H [--policy P] [--model M]   forget a key's usage
flags common to all: --addr (admin listener, default 127.0.0.1:9090), --token-env (default TOKENGATE_ADMIN_TOKEN),
  --format json|text (default json: the API's answer; text: a line per limit of each key)`

// runAdmin is the admin API's client. It prints one JSON document per
// call, or with --format text a line per limit of each key; key values
// given with --key are sent for hashing by the server and never printed.
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
	format := fs.String("format", "json", "output: json (the API's answer) or text (a line per limit)")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError(err)
	}
	if *format != "json" && *format != "text" {
		return usageError(fmt.Errorf("--format must be json or text, got %q", *format))
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
	if *format == "text" {
		return printAdminText(stdout, resp)
	}
	out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(resp)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, string(out))
	return err
}

// printAdminText prints an answer for people: for each key under each
// policy a line naming them, then a line per limit with what it counts,
// its window or period, used / max, remaining and the time until it
// resets. Cost is in the prices' currency, with six decimals.
func printAdminText(w io.Writer, resp proto.Message) error {
	var usage []*adminv1.Usage
	switch r := resp.(type) {
	case *adminv1.GetUsageResponse:
		usage = r.GetUsage()
	case *adminv1.ListUsageResponse:
		usage = r.GetUsage()
		if len(usage) == 0 {
			_, err := fmt.Fprintln(w, "no key holds anything")
			return err
		}
	case *adminv1.ResetUsageResponse:
		_, err := fmt.Fprintf(w, "counters reset: %d\n", r.GetCountersReset())
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, u := range usage {
		head := "policy " + u.GetPolicy() + "  key " + u.GetKeySha256()
		if u.GetModel() != "" {
			head += "  model " + u.GetModel()
		}
		fmt.Fprintln(tw, head) // no cell: each key aligns its own limits
		for _, l := range u.GetLimits() {
			what := l.GetUnit()
			if l.GetKind() != "" && l.GetKind() != "total" {
				what = l.GetKind() + " " + what
			}
			span := l.GetPeriod()
			if d := l.GetWindow(); d != nil {
				span = "per " + config.ShortDuration(d.AsDuration())
			}
			amount := func(n int64) string { return formatAmount(l.GetUnit(), n) }
			fmt.Fprintf(tw, "  %s\t%s\t%s\tused %s / %s\tremaining %s\treset in %s\n", l.GetName(), what, span,
				amount(l.GetUsed()), amount(l.GetMax()), amount(l.GetRemaining()), l.GetResetIn().AsDuration().Round(time.Second))
		}
	}
	return tw.Flush()
}

// formatAmount writes n in unit: cost, kept in micro-units, as an amount
// of the currency with six decimals (1234500 is 1.234500).
func formatAmount(unit string, n int64) string {
	if unit != config.UnitCost {
		return strconv.FormatInt(n, 10)
	}
	return config.FormatMicros(n)
}
