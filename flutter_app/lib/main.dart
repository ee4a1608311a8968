import 'package:flutter/material.dart';

import 'src/ui/app.dart';

void main() {
  runApp(FitlensApp.production());
}
