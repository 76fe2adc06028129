package load

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// advanceTimeout bounds one clock move; the admin port answers at once.
const advanceTimeout = 10 * time.Second

// ClockAdvancer returns an Options.Advance that moves the fake clock of
// every tokengate whose admin address (host:port) is given, through its
// POST /debug/clock?advance=D hook: replicas sharing a store must agree on
// the time.
func ClockAdvancer(admins ...string) func(time.Duration) error {
	client := &http.Client{Timeout: advanceTimeout}
	return func(d time.Duration) error {
		for _, a := range admins {
			u := "http://" + a + "/debug/clock?advance=" + url.QueryEscape(d.String())
			req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, u, nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("advance %s by %v: %s %s", a, d, resp.Status, body)
			}
		}
		return nil
	}
}
