package shimlog

import (
	"bytes"
	"testing"
)

// BenchmarkRotatorWrite is the logger's hot path: 128 KiB pipe reads of
// whole lines into a rotating chain (10 MiB x 5), as in make bench's
// capture benchmark but without a container. Run it with -bench.
func BenchmarkRotatorWrite(b *testing.B) {
	for _, lineLen := range []int{100, 4096} {
		b.Run(map[int]string{100: "100B", 4096: "4KiB"}[lineLen], func(b *testing.B) {
			line := append(bytes.Repeat([]byte("x"), lineLen-1), '\n')
			chunk := bytes.Repeat(line, 128*1024/lineLen)
			w, _ := benchRotator(b, 10<<20, 5)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			for range b.N {
				w.writeRetrying(chunk)
			}
			b.StopTimer()
			w.close()
		})
	}
}
