package media

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// BenchmarkUpload measures upload throughput over HTTP (reported as MB/s):
// receive, hash, fsync, rename, commit.
func BenchmarkUpload(b *testing.B) {
	for _, size := range []int{64 << 10, 8 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			e := newEnv(b, Config{MaxUploadBytes: 64 << 20})
			data := randomBytes(b, size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				data[0] = byte(i) // distinct content: no deduplication shortcut
				data[1] = byte(i >> 8)
				req, _ := http.NewRequest("POST", e.srv.URL+"/_matrix/media/v3/upload", bytes.NewReader(data))
				req.Header.Set("Authorization", "Bearer "+alice)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					b.Fatal(res.Status)
				}
			}
		})
	}
}

// BenchmarkDownload measures authenticated download throughput (MB/s).
func BenchmarkDownload(b *testing.B) {
	for _, size := range []int{64 << 10, 8 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			e := newEnv(b, Config{MaxUploadBytes: 64 << 20})
			id := e.upload(alice, randomBytes(b, size), "application/octet-stream", "")
			url := e.srv.URL + "/_matrix/client/v1/media/download/media.test/" + id
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+alice)
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || n != int64(size) {
					b.Fatal(res.Status, n)
				}
			}
		})
	}
}

// BenchmarkThumbnail measures making one thumbnail (decode, resize,
// encode, store) per source format, and serving a cached one over HTTP.
func BenchmarkThumbnail(b *testing.B) {
	sources := []struct {
		name string
		data func(testing.TB) []byte
	}{
		{"jpeg-4000x3000", func(t testing.TB) []byte { return jpegBytes(t, 4000, 3000) }},
		{"jpeg-1280x960", func(t testing.TB) []byte { return jpegBytes(t, 1280, 960) }},
		{"png-1280x960", func(t testing.TB) []byte { return pngBytes(t, 1280, 960) }},
		{"gif-600x600", func(t testing.TB) []byte { return gifBytes(t, 600, 600) }},
		{"webp-600x400", func(t testing.TB) []byte { return readTestdata(t, "lossy-600x400.webp") }},
	}
	for _, src := range sources {
		for _, m := range []struct {
			method string
			w, h   int
		}{{"scale", 800, 600}, {"crop", 96, 96}} {
			b.Run(src.name+"/"+m.method, func(b *testing.B) {
				e := newEnv(b, Config{MaxUploadBytes: 64 << 20})
				id := e.upload(alice, src.data(b), "image/jpeg", "")
				r, err := e.svc.getMedia(context.Background(), testServer, id)
				if err != nil {
					b.Fatal(err)
				}
				bw, bh := box(m.w, m.h, m.method)
				req := thumbnailRequest{width: m.w, height: m.h, method: m.method}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := e.svc.makeThumbnail(context.Background(), r.sha256.String, bw, bh, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	b.Run("cached", func(b *testing.B) {
		e := newEnv(b, Config{})
		id := e.upload(alice, jpegBytes(b, 1280, 960), "image/jpeg", "")
		url := e.srv.URL + thumbPath(id, 320, 240, "scale")
		for i := 0; i < b.N+1; i++ {
			if i == 1 {
				b.ResetTimer() // the first request makes it
			}
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+alice)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				b.Fatal(res.Status)
			}
		}
	})
}
