package main

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/klog/v2"
)

// newLogger builds zap under logr, and routes klog (client-go's logging) through it, as the
// controller does, so that both binaries log the same way.
func newLogger(level, format string) (logr.Logger, func(), error) {
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
	default:
		return logr.Discard(), nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(zapLevel)
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	cfg.DisableStacktrace = zapLevel > zapcore.DebugLevel
	// Sampling would drop answers under a herd, exactly when they matter.
	cfg.Sampling = nil
	zl, err := cfg.Build()
	if err != nil {
		return logr.Discard(), nil, err
	}
	logger := zapr.NewLoggerWithOptions(zl)
	klog.SetLoggerWithOptions(logger, klog.ContextualLogger(true))
	return logger, func() { _ = zl.Sync() }, nil
}
