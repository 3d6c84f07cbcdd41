package provisioner

import (
	"context"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"rekey.dev/rekey/internal/contract"
)

// Options tune the provision controller.
type Options struct {
	// Threads provision and delete in parallel (default 4).
	Threads int
	// ResyncPeriod re-lists claims and volumes (default 15 minutes).
	ResyncPeriod time.Duration
	// RetryIntervalStart is the first retry delay after a failure (default
	// 1 s), doubled up to RetryIntervalMax (default 5 minutes).
	RetryIntervalStart, RetryIntervalMax time.Duration
}

// NewController returns the library's provision controller for
// contract.DriverName driving p. It runs without leader election of its
// own: rekey-controller elects a leader first and runs it only there.
func NewController(ctx context.Context, client kubernetes.Interface, p *Provisioner, o Options) *controller.ProvisionController {
	if o.Threads <= 0 {
		o.Threads = 4
	}
	if o.ResyncPeriod <= 0 {
		o.ResyncPeriod = 15 * time.Minute
	}
	if o.RetryIntervalStart <= 0 {
		o.RetryIntervalStart = time.Second
	}
	if o.RetryIntervalMax <= 0 {
		o.RetryIntervalMax = 5 * time.Minute
	}
	return controller.NewProvisionController(ctx, client, contract.DriverName, p,
		controller.LeaderElection(false),
		controller.Threadiness(o.Threads),
		controller.ResyncPeriod(o.ResyncPeriod),
		controller.RateLimiter(newRateLimiter(o.RetryIntervalStart, o.RetryIntervalMax)),
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
		controller.AddFinalizer(true),
		controller.MetricsPort(0),
	)
}

// newRateLimiter retries a failed claim or volume after start, doubling up
// to max, with an overall 10 per second (burst 100) as the library's own.
func newRateLimiter(start, max time.Duration) workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedMaxOfRateLimiter(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](start, max),
		&workqueue.TypedBucketRateLimiter[string]{Limiter: rate.NewLimiter(rate.Limit(10), 100)},
	)
}
