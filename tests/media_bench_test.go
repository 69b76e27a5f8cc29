package tests

import (
	"context"
	"crypto/rand"
	"io"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/chatalot/chatalot/tests/harness"
)

// benchClient registers a user on s with mautrix (testing.TB flavour of
// mediaClient).
func benchClient(b *testing.B, ctx context.Context, s *harness.Server) *mautrix.Client {
	b.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		b.Fatal(err)
	}
	res, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "bench" + randomSuffix()[:6], Password: "correct horse battery staple"})
	if err != nil {
		b.Fatal(err)
	}
	cli.UserID, cli.AccessToken, cli.DeviceID = res.UserID, res.AccessToken, res.DeviceID
	return cli
}

// BenchmarkMediaServer measures the real binary over loopback HTTP with
// mautrix-go: upload and download throughput (MB/s) of 8 MiB files, and the
// time to make a thumbnail of a 12-megapixel JPEG and of a 1600x1200 one
// (each iteration uploads distinct bytes, so no thumbnail comes from the
// cache).
func BenchmarkMediaServer(b *testing.B) {
	s := harness.Start(b, harness.WithArgs("--max-upload-bytes", "67108864", "--media-quota-bytes", "0"))
	ctx := context.Background()
	cli := benchClient(b, ctx, s)
	data := make([]byte, 8<<20)
	rand.Read(data)

	b.Run("upload-8MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			data[0], data[1] = byte(i), byte(i>>8) // distinct: no deduplication
			if _, err := cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data}); err != nil {
				b.Fatal(err)
			}
		}
	})
	up, err := cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("download-8MiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			res, err := cli.Download(ctx, up.ContentURI)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if n != int64(len(data)) {
				b.Fatalf("%d bytes", n)
			}
		}
	})
	for _, img := range []struct {
		name string
		w, h int
	}{{"thumbnail-jpeg-4000x3000-to-800x600", 4000, 3000}, {"thumbnail-jpeg-1600x1200-to-320x240", 1600, 1200}} {
		src := mediaImage(b, "jpeg", img.w, img.h)
		tw, th := 800, 600
		if img.w == 1600 {
			tw, th = 320, 240
		}
		b.Run(img.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				// Bytes after the JPEG's end marker make a new file of
				// the same picture.
				distinct := append(append([]byte{}, src...), byte(i), byte(i>>8), byte(i>>16))
				up, err := cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: distinct, ContentType: "image/jpeg"})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				res, err := cli.DownloadThumbnail(ctx, up.ContentURI, th, tw, mautrix.DownloadThumbnailExtra{Method: "scale"})
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
}
