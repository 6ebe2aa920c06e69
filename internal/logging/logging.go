// Package logging builds the process logger both binaries use.
package logging

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
)

// New builds the process logger: zap underneath, logr on top, and klog (client-go's own
// logging) routed through it so every line has the same structure. Sampling is off: it would
// drop lines under a burst or a herd, exactly when they matter.
func New(level, format string) (logr.Logger, func(), error) {
	var zapLevel zapcore.Level
	if err := zapLevel.UnmarshalText([]byte(level)); err != nil {
		return logr.Discard(), nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	default:
		return logr.Discard(), nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(zapLevel)
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	cfg.DisableStacktrace = zapLevel > zapcore.DebugLevel
	cfg.Sampling = nil
	zl, err := cfg.Build()
	if err != nil {
		return logr.Discard(), nil, err
	}
	logger := zapr.NewLoggerWithOptions(zl, zapr.AllowZapFields(true))
	klog.SetLoggerWithOptions(logger, klog.ContextualLogger(true))
	return logger, func() { _ = zl.Sync() }, nil
}
