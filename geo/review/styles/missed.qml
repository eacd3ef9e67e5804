<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" styleCategories="AllStyleCategories" labelsEnabled="0" readOnly="0" hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0" simplifyDrawingHints="1" simplifyDrawingTol="1" simplifyLocal="1" simplifyAlgorithm="0" simplifyMaxScale="1">
 <renderer-v2 type="categorizedSymbol" attr="channel" symbollevels="0" forceraster="0" enableorderby="0">
  <categories>
   <category render="true" symbol="0" value="new" label="見逃し（新築）"/>
   <category render="true" symbol="1" value="demolished" label="見逃し（滅失）"/>
   <category render="true" symbol="2" value="" label="見逃し"/>
  </categories>
  <symbols>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="255,0,255,70"/>
      <Option name="outline_color" type="QString" value="255,0,255,255"/>
      <Option name="outline_style" type="QString" value="dash"/>
      <Option name="outline_width" type="QString" value="0.8"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="255,0,255,70"/>
     <prop k="outline_color" v="255,0,255,255"/>
     <prop k="outline_style" v="dash"/>
     <prop k="outline_width" v="0.8"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="1" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="0,200,200,70"/>
      <Option name="outline_color" type="QString" value="0,160,160,255"/>
      <Option name="outline_style" type="QString" value="dash"/>
      <Option name="outline_width" type="QString" value="0.8"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="0,200,200,70"/>
     <prop k="outline_color" v="0,160,160,255"/>
     <prop k="outline_style" v="dash"/>
     <prop k="outline_width" v="0.8"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="2" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="255,0,255,70"/>
      <Option name="outline_color" type="QString" value="255,0,255,255"/>
      <Option name="outline_style" type="QString" value="dash"/>
      <Option name="outline_width" type="QString" value="0.8"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="255,0,255,70"/>
     <prop k="outline_color" v="255,0,255,255"/>
     <prop k="outline_style" v="dash"/>
     <prop k="outline_width" v="0.8"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </symbols>
  <source-symbol>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="255,0,255,70"/>
      <Option name="outline_color" type="QString" value="255,0,255,255"/>
      <Option name="outline_style" type="QString" value="dash"/>
      <Option name="outline_width" type="QString" value="0.8"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="255,0,255,70"/>
     <prop k="outline_color" v="255,0,255,255"/>
     <prop k="outline_style" v="dash"/>
     <prop k="outline_width" v="0.8"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </source-symbol>
  <rotation/>
  <sizescale/>
 </renderer-v2>
 <fieldConfiguration>
  <field name="channel" configurationFlags="None">
   <editWidget type="ValueMap">
    <config>
     <Option type="Map">
      <Option name="map" type="List">
       <Option type="Map">
        <Option name="新築（新しくできた家屋）" type="QString" value="new"/>
       </Option>
       <Option type="Map">
        <Option name="滅失（なくなった家屋）" type="QString" value="demolished"/>
       </Option>
      </Option>
     </Option>
    </config>
   </editWidget>
  </field>
  <field name="調査日" configurationFlags="None">
   <editWidget type="DateTime">
    <config>
     <Option type="Map">
      <Option name="allow_null" type="bool" value="true"/>
      <Option name="calendar_popup" type="bool" value="true"/>
      <Option name="display_format" type="QString" value="yyyy-MM-dd"/>
      <Option name="field_format" type="QString" value="yyyy-MM-dd"/>
      <Option name="field_iso_format" type="bool" value="false"/>
     </Option>
    </config>
   </editWidget>
  </field>
 </fieldConfiguration>
 <aliases>
  <alias field="channel" name="見逃しの種別"/>
  <alias field="調査者" name="調査者"/>
  <alias field="調査日" name="調査日"/>
  <alias field="備考" name="備考"/>
 </aliases>
 <defaults>
  <default field="channel" expression="'new'" applyOnUpdate="0"/>
 </defaults>
 <editable/>
 <previewExpression/>
 <layerGeometryType>2</layerGeometryType>
</qgis>
