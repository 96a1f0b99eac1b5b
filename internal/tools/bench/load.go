package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult counts what a fixed-rate run did.
type loadResult struct {
	Planned   int // rate × duration
	Responses int // answered, whatever the status; each is a request the server completed
	Non200    int
	Errors    int // transport errors and timeouts
	Skipped   int // tokens dropped because the workers fell more than the grace behind
	Elapsed   time.Duration
	FirstErr  error
}

// fixedRate sends GET url at rate per second for d from workers keep-alive
// connections. A pacer releases tokens on schedule; a worker more than a
// second behind drops its token, so the run ends at most a second after d.
func fixedRate(ctx context.Context, url string, rate int, d time.Duration, workers int) loadResult {
	total := int(float64(rate) * d.Seconds())
	res := loadResult{Planned: total}
	tr := &http.Transport{
		MaxIdleConnsPerHost: workers, // the default of 2 would churn connections
		MaxConnsPerHost:     workers,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}

	tokens := make(chan struct{}, total)
	var responses, non200, errs, skipped atomic.Int64
	var errOnce sync.Once
	start := time.Now()
	late := start.Add(d + time.Second)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tokens {
				if ctx.Err() != nil || time.Now().After(late) {
					skipped.Add(1)
					continue
				}
				code, err := get(ctx, client, url)
				switch {
				case err != nil:
					errs.Add(1)
					errOnce.Do(func() { res.FirstErr = err })
				default:
					responses.Add(1)
					if code != http.StatusOK {
						non200.Add(1)
					}
				}
			}
		}()
	}

	tick := time.NewTicker(time.Millisecond)
	issued := 0
	for issued < total && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
		due := int(time.Since(start).Seconds() * float64(rate))
		for ; issued < min(due, total); issued++ {
			tokens <- struct{}{}
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	res.Elapsed = time.Since(start)
	res.Responses = int(responses.Load())
	res.Non200 = int(non200.Load())
	res.Errors = int(errs.Load())
	res.Skipped = int(skipped.Load()) + total - issued
	return res
}

func get(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// scrape fetches base/metrics.
func scrape(ctx context.Context, base string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", fmt.Errorf("scrape obsd: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("scrape obsd: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return "", fmt.Errorf("scrape obsd: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape obsd: status %d: %.200s", resp.StatusCode, body)
	}
	return string(body), nil
}
