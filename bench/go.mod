module github.com/ipprot/ipprot/bench

go 1.26.0

require (
	github.com/dsnet/compress v0.0.1
	github.com/klauspost/compress v1.20.4
	github.com/klauspost/pgzip v1.3.0
	go.uber.org/goleak v1.3.0
	golang.org/x/sys v0.50.0
)
